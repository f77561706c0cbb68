"""Changing routes.yaml under a running gateway: the file watcher, SIGHUP, refused files, and
requests that straddle a reload; and `library-gateway routes check` as an operator runs it.

Nothing here sleeps: each test waits for the route map's own `on_change` / `on_failure`
callbacks, so it resumes the moment the gateway has acted on the file.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.fernet import Fernet
from pytest_aiohttp import AiohttpServer

from gateway import appkeys
from gateway.config.routes import RouteTable
from gateway.config.routes_file import RoutesInvalid
from tests.helpers import Gateway, MakeGateway, routes_for

# A safety net so that a watcher which never fires fails the test instead of hanging the
# suite; it measures nothing, and a working gateway answers long before it.
NEVER = 60.0


class Reloads:
    """Follows one gateway's route map: an event for a new map, one for a refused file."""

    def __init__(self, client: Gateway) -> None:
        self.changed = asyncio.Event()
        self.failed = asyncio.Event()
        self.refused: list[RoutesInvalid] = []
        route_map = client.app[appkeys.ROUTES]
        route_map.on_change.append(self._on_change)
        route_map.on_failure.append(self._on_failure)

    def _on_change(self, _table: RouteTable) -> None:
        self.changed.set()

    def _on_failure(self, exc: RoutesInvalid) -> None:
        self.refused.append(exc)
        self.failed.set()

    async def change(self) -> None:
        await asyncio.wait_for(self.changed.wait(), NEVER)

    async def failure(self) -> None:
        await asyncio.wait_for(self.failed.wait(), NEVER)


def routes_to(server: TestServer, extra: str = "") -> str:
    assert server.port is not None
    return routes_for(server.port, extra)


def write_routes(path: Path, text: str) -> None:
    """Swap the file's contents in one step, as editors and ConfigMap updates do, so the
    watcher never reads half a file."""
    staging = path.with_name(path.name + ".new")
    staging.write_text(text, encoding="utf-8")
    os.replace(staging, path)


def send_sighup() -> None:
    """Signal this process, as `kill -HUP` would signal the gateway's."""
    # Without a handler SIGHUP would end the test run; the gateway must have installed one.
    assert signal.getsignal(signal.SIGHUP) not in (signal.SIG_DFL, signal.SIG_IGN, None)
    os.kill(os.getpid(), signal.SIGHUP)


async def named_backend(aiohttp_server: AiohttpServer, name: str) -> TestServer:
    """A backend that says who it is, so a test sees where the gateway sent a request."""

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"backend": name, "path": request.raw_path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    server: TestServer = await aiohttp_server(app)
    return server


async def served_by(client: Gateway, path: str) -> str:
    resp = await client.get(path)
    assert resp.status == 200
    backend: str = (await resp.json())["backend"]
    return backend


@pytest.fixture
async def first(aiohttp_server: AiohttpServer) -> TestServer:
    return await named_backend(aiohttp_server, "first")


@pytest.fixture
async def second(aiohttp_server: AiohttpServer) -> TestServer:
    return await named_backend(aiohttp_server, "second")


@pytest.fixture
def route_file(tmp_path: Path) -> Path:
    return tmp_path / "routes.yaml"


async def start(make_gateway: MakeGateway, route_file: Path, text: str) -> Gateway:
    """A gateway whose map in force came from `route_file`, holding `text`."""
    write_routes(route_file, text)
    client: Gateway = await make_gateway(text, route_file=route_file)
    return client


DIGITAL = """\
  - name: digital
    prefix: /digital
    backend: http://127.0.0.1:{port}
    auth: public
"""


async def test_an_edited_file_is_picked_up_without_a_restart(
    make_gateway: MakeGateway, route_file: Path, first: TestServer, second: TestServer
) -> None:
    gw = await start(make_gateway, route_file, routes_to(first))
    reloads = Reloads(gw)
    assert await served_by(gw, "/catalogue/search") == "first"
    assert (await gw.get("/digital/book")).status == 404

    write_routes(route_file, routes_to(second, DIGITAL.format(port=second.port)))
    await reloads.change()

    assert await served_by(gw, "/catalogue/search") == "second"
    assert await served_by(gw, "/digital/book") == "second"


async def test_sighup_reloads_the_file(
    make_gateway: MakeGateway, route_file: Path, first: TestServer, second: TestServer
) -> None:
    # The file already differs from the map in force when the gateway starts. The watcher
    # acts only on changes it sees, so it stays quiet: only the signal can load this file.
    write_routes(route_file, routes_to(second))
    gw = await make_gateway(routes_to(first), route_file=route_file)
    reloads = Reloads(gw)
    assert await served_by(gw, "/catalogue/search") == "first"

    send_sighup()
    await reloads.change()

    assert await served_by(gw, "/catalogue/search") == "second"


async def test_sighup_with_a_broken_file_keeps_the_last_good_map(
    make_gateway: MakeGateway, route_file: Path, first: TestServer
) -> None:
    write_routes(route_file, "routes: [")
    gw = await make_gateway(routes_to(first), route_file=route_file)
    reloads = Reloads(gw)

    send_sighup()
    await reloads.failure()

    [refusal] = reloads.refused
    assert str(refusal.problems[0]).startswith(f"{route_file}:1: not valid YAML")
    assert not reloads.changed.is_set()
    assert await served_by(gw, "/catalogue/search") == "first"


BROKEN = [
    pytest.param(
        "  - name: digital\n    prefix: /digital\n    backend: http://127.0.0.1:{port}\n"
        "    auth: public\n    publik: [/digital/open]\n",
        19,
        "unknown key 'publik'",
        id="unknown-key",
    ),
    pytest.param(
        "  - name: digital\n    prefix: /digital: x\n", 16, "not valid YAML", id="bad-yaml"
    ),
]


@pytest.mark.parametrize(("extra", "line", "reason"), BROKEN)
async def test_a_broken_file_is_logged_with_line_and_reason_and_the_old_map_stays(
    make_gateway: MakeGateway,
    route_file: Path,
    first: TestServer,
    second: TestServer,
    caplog: pytest.LogCaptureFixture,
    extra: str,
    line: int,
    reason: str,
) -> None:
    gw = await start(make_gateway, route_file, routes_to(first))
    reloads = Reloads(gw)
    caplog.set_level(logging.ERROR, logger="gateway.routes")

    # Every route of the broken file points elsewhere: had any of it been applied, the
    # catalogue would answer from `second`.
    write_routes(route_file, routes_to(second, extra.format(port=second.port)))
    await reloads.failure()

    [record] = [r for r in caplog.records if r.name == "gateway.routes"]
    assert record.levelno == logging.ERROR
    problems: list[str] = record.__dict__["problems"]
    assert any(p.startswith(f"{route_file}:{line}: {reason}") for p in problems), problems
    assert not reloads.changed.is_set()
    assert await served_by(gw, "/catalogue/search") == "first"
    assert (await gw.get("/digital/book")).status == 404


async def test_a_fixed_file_takes_effect_after_a_refused_one(
    make_gateway: MakeGateway, route_file: Path, first: TestServer, second: TestServer
) -> None:
    gw = await start(make_gateway, route_file, routes_to(first))
    reloads = Reloads(gw)

    write_routes(route_file, routes_to(second).replace("auth: public", "auth: sometimes"))
    await reloads.failure()
    assert await served_by(gw, "/catalogue/search") == "first"

    write_routes(route_file, routes_to(second))
    await reloads.change()
    assert await served_by(gw, "/catalogue/search") == "second"


async def test_a_request_in_flight_finishes_on_its_backend_while_new_ones_follow_the_reload(
    make_gateway: MakeGateway,
    route_file: Path,
    aiohttp_server: AiohttpServer,
    second: TestServer,
) -> None:
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.json_response({"backend": "first", "path": request.raw_path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", held)
    first: TestServer = await aiohttp_server(app)

    gw = await start(make_gateway, route_file, routes_to(first))
    reloads = Reloads(gw)
    in_flight = asyncio.create_task(gw.get("/catalogue/long-download"))
    await arrived.wait()

    write_routes(route_file, routes_to(second))
    await reloads.change()
    assert await served_by(gw, "/catalogue/search") == "second"

    release.set()
    resp = await in_flight
    assert resp.status == 200
    assert await resp.json() == {"backend": "first", "path": "/catalogue/long-download"}


async def test_a_route_removed_from_the_file_answers_404(
    make_gateway: MakeGateway, route_file: Path, first: TestServer
) -> None:
    text = routes_to(first)
    gw = await start(make_gateway, route_file, text)
    reloads = Reloads(gw)
    assert await served_by(gw, "/open/news") == "first"

    without_open = text[: text.index("  - name: open")]
    write_routes(route_file, without_open)
    await reloads.change()

    resp = await gw.get("/open/news")
    assert resp.status == 404
    assert (await resp.json())["error"] == "not_found"
    assert await served_by(gw, "/catalogue/search") == "first"


# --- SIGHUP while the gateway starts ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
async def test_a_sighup_while_the_gateway_starts_does_not_end_it(
    route_file: Path, tmp_path: Path, workers: int
) -> None:
    """`systemctl reload` (the unit's `kill -HUP`) can come while `run` is still starting: a
    systemd `Type=exec` service counts as started the moment the program runs. SIGHUP's
    default action ends a process, so until the gateway listens for the signal it must be
    ignored (the files are read afresh at start anyway). The gateway is held at its first
    database connection, signalled there, then let go: it must end by its own error, not
    by the signal."""
    write_routes(route_file, routes_for(8101))
    connected = asyncio.Event()
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        connected.set()

    database = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = database.sockets[0].getsockname()[1]
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
        "GATEWAY_DATABASE_URL": f"postgresql://gateway:secret@127.0.0.1:{port}/library",
        "GATEWAY_COOKIE_KEYS": Fernet.generate_key().decode("ascii"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "run",
        "--routes",
        str(route_file),
        "--port",
        "0",
        "--admin-port",
        "0",
        "--workers",
        str(workers),
        "--data-dir",
        str(tmp_path / "data"),
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(NEVER):
            await connected.wait()
            process.send_signal(signal.SIGHUP)
            # Then the database goes away, so the start fails: a gateway that lived through
            # the signal ends with its own error, one the signal ended has no say.
            for writer in held:
                writer.close()
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
        database.close()
    assert process.returncode != -signal.SIGHUP, stderr.decode(errors="replace")
    assert process.returncode == 1, stderr.decode(errors="replace")


# --- library-gateway routes check ----------------------------------------------------------


def routes_check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "routes", "check", str(path)],
        capture_output=True,
        text=True,
        cwd=path.parent,
        check=False,
    )


def test_routes_check_accepts_a_good_file_and_summarises_it(route_file: Path) -> None:
    route_file.write_text(routes_for(8101), encoding="utf-8")

    result = routes_check(route_file)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"{route_file}: 3 routes OK"
    for prefix, name, auth in (
        ("/catalogue", "catalogue", "optional"),
        ("/open", "open", "public"),
        ("/reservations", "reservations", "required"),
    ):
        [line] = [line for line in lines[1:] if line.split()[0] == prefix]
        assert "http://127.0.0.1:8101" in line
        assert f"[{name}, auth: {auth}]" in line


SEVERAL_PROBLEMS = """\
routes:
  - name: catalogue
    prefix: /catalogue
    backend: http://127.0.0.1:8101
    auth: optional
    publik: [/catalogue/open]
  - name: catalogue
    prefix: /auth/admin
    backend: ftp://127.0.0.1:8102
    auth: sometimes
"""


def test_routes_check_refuses_a_bad_file_naming_every_problem(route_file: Path) -> None:
    route_file.write_text(SEVERAL_PROBLEMS, encoding="utf-8")

    result = routes_check(route_file)

    assert result.returncode == 1
    assert result.stdout == ""
    expected = {
        6: "unknown key 'publik'",
        7: "duplicate route name 'catalogue' (first on line 2)",
        8: "prefix '/auth/admin' lies under /auth",
        9: "backend 'ftp://127.0.0.1:8102' must start with http:// or https://",
        10: "auth must be one of public, optional, required, not 'sometimes'",
    }
    lines = result.stderr.splitlines()
    assert len(lines) == len(expected), result.stderr
    for line_number, reason in expected.items():
        assert [
            line for line in lines if line.startswith(f"{route_file}:{line_number}: {reason}")
        ], result.stderr


def test_routes_check_of_a_missing_file_fails(route_file: Path) -> None:
    result = routes_check(route_file)

    assert result.returncode == 1
    assert result.stderr.startswith(f"{route_file}:0: cannot read the file")
