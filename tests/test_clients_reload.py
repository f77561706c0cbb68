"""Changing clients.yaml under a running gateway (the same watcher as routes.yaml: the file's
contents once a second, SIGHUP for both files at once, a refused file logged and the last good
table kept); and `library-gateway clients check` and `run --clients` as an operator runs them.

Nothing here sleeps: each test waits for the maps' own `on_change` / `on_failure` callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from gateway import appkeys
from gateway.cli.main import clients_path
from gateway.config.clients_file import ClientsInvalid, load_clients
from gateway.config.reload import ClientMap, RouteMap, WatchedFile, watcher
from gateway.config.routes_file import parse_routes
from tests.helpers import Gateway, MakeGateway, cli, routes_for
from tests.test_reload import NEVER, send_sighup
from tests.test_reload import write_routes as write_file

SECRET = "0123456789abcdef" * 3

ONLINE = """\
clients:
  - client_id: online-library
    name: De Online Bibliotheek
    redirect_uris: [https://online.example.nl/callback]
    secret_env: ONLINE_LIBRARY_SECRET
"""

APP = """\
  - client_id: library-app
    name: De Bibliotheek-app
    redirect_uris: [https://app.example.nl/callback, https://app.example.nl/silent]
    subject: pairwise
"""


class Follow:
    """Follows one watched file: an event for a new table, one for a refused file."""

    def __init__(self, watched: WatchedFile[Any, Any]) -> None:
        self.changed = asyncio.Event()
        self.failed = asyncio.Event()
        self.refused: list[ClientsInvalid] = []
        watched.on_change.append(lambda _table: self.changed.set())
        watched.on_failure.append(self._on_failure)

    def _on_failure(self, exc: ClientsInvalid) -> None:
        self.refused.append(exc)
        self.failed.set()

    async def change(self) -> None:
        await asyncio.wait_for(self.changed.wait(), NEVER)

    async def failure(self) -> None:
        await asyncio.wait_for(self.failed.wait(), NEVER)


@pytest.fixture
def client_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ONLINE_LIBRARY_SECRET", SECRET)
    path = tmp_path / "clients.yaml"
    write_file(path, ONLINE)
    return path


async def federated(
    make_gateway: MakeGateway, backend: TestServer, client_file: Path, **routes: Any
) -> tuple[Gateway, ClientMap]:
    """A gateway serving the clients in `client_file`, and its client map."""
    client_map = ClientMap(load_clients(client_file), client_file, **routes)
    gw = await make_gateway(routes_for(backend.port), client_map=client_map)
    assert gw.app[appkeys.CLIENTS] is client_map
    return gw, client_map


async def test_without_a_clients_file_federation_is_off(gw: Gateway) -> None:
    assert gw.app[appkeys.CLIENTS] is None


async def test_an_edited_clients_file_is_picked_up_without_a_restart(
    make_gateway: MakeGateway, backend: TestServer, client_file: Path
) -> None:
    gw, client_map = await federated(make_gateway, backend, client_file)
    follow = Follow(client_map)
    before = client_map.table
    assert before.get("library-app") is None

    write_file(client_file, ONLINE + APP)
    await follow.change()

    app = gw.app[appkeys.CLIENTS]
    assert app is not None and app.table is not before
    client = app.table.get("library-app")
    assert client is not None and client.public and client.subject == "pairwise"
    assert app.table.get("online-library") is not None
    assert client_map.reloads_ok == 1


@pytest.mark.parametrize(
    ("extra", "line", "reason"),
    [
        pytest.param(
            APP.replace("subject:", "subjekt:"), 9, "unknown key 'subjekt'", id="unknown-key"
        ),
        pytest.param(
            APP + "    secret_env: LIBRARY_APP_SECRET\n",
            10,
            "secret_env: the environment variable LIBRARY_APP_SECRET is not set",
            id="secret-unset",
        ),
        pytest.param(
            APP.replace("https://app.example.nl/silent", "http://app.example.nl/silent"),
            8,
            "redirect_uris entry 'http://app.example.nl/silent' must start with https://",
            id="http",
        ),
    ],
)
async def test_a_broken_clients_file_is_logged_and_the_last_good_table_stays(
    make_gateway: MakeGateway,
    backend: TestServer,
    client_file: Path,
    caplog: pytest.LogCaptureFixture,
    extra: str,
    line: int,
    reason: str,
) -> None:
    _gw, client_map = await federated(make_gateway, backend, client_file)
    follow = Follow(client_map)
    good = client_map.table
    caplog.set_level(logging.ERROR, logger="gateway.clients")

    write_file(client_file, ONLINE.replace("online-library", "renamed") + extra)
    await follow.failure()

    [record] = [r for r in caplog.records if r.name == "gateway.clients"]
    assert record.getMessage() == "client list not reloaded, the last good one stays in force"
    problems: list[str] = record.__dict__["problems"]
    assert any(p.startswith(f"{client_file}:{line}: {reason}") for p in problems), problems
    assert not follow.changed.is_set()
    assert client_map.table is good and client_map.reloads_failed == 1
    assert client_map.table.get("renamed") is None


async def test_a_client_named_like_a_route_is_refused_at_reload(
    make_gateway: MakeGateway, backend: TestServer, client_file: Path
) -> None:
    routes = RouteMap(parse_routes(routes_for(backend.port), "routes.yaml"))
    _gw, client_map = await federated(make_gateway, backend, client_file, routes=routes)
    follow = Follow(client_map)

    write_file(client_file, ONLINE + APP.replace("library-app", "reservations"))
    await follow.failure()

    [refusal] = follow.refused
    assert str(refusal.problems[0]).startswith(
        f"{client_file}:6: client_id 'reservations' is the name of the route on line 6 "
        "of routes.yaml"
    )
    assert client_map.table.get("reservations") is None


async def test_a_fixed_clients_file_takes_effect_after_a_refused_one(
    make_gateway: MakeGateway, backend: TestServer, client_file: Path
) -> None:
    _gw, client_map = await federated(make_gateway, backend, client_file)
    follow = Follow(client_map)

    write_file(client_file, ONLINE + APP.replace("pairwise", "anonymous"))
    await follow.failure()
    write_file(client_file, ONLINE + APP)
    await follow.change()

    assert client_map.table.get("library-app") is not None


async def test_a_clients_file_refused_for_a_route_is_read_again_once_the_route_is_renamed(
    make_gateway: MakeGateway, backend: TestServer, client_file: Path, tmp_path: Path
) -> None:
    """A clients.yaml refused because of routes.yaml (a client named like a route) takes
    effect once the operator renames the route: the clients file is read again when the
    routes file it depended on changes, without being touched itself."""
    route_file = tmp_path / "routes.yaml"
    write_file(route_file, routes_for(backend.port))
    gw = await make_gateway(routes_for(backend.port), route_file=route_file)
    route_map = gw.app[appkeys.ROUTES]
    client_map = ClientMap(load_clients(client_file), client_file, routes=route_map)
    follow = Follow(client_map)
    async with contextlib.asynccontextmanager(watcher(route_map, client_map))(gw.app):
        # Each file read as its watcher would on seeing it change (what a change sets off is
        # what is tested, not the polling that notices it).
        write_file(client_file, ONLINE + APP.replace("library-app", "reservations"))
        assert not client_map.reload()
        await follow.failure()
        assert client_map.table.get("reservations") is None

        renamed = routes_for(backend.port).replace("name: reservations", "name: booking")
        write_file(route_file, renamed)
        assert route_map.reload()
        await follow.change()

    assert client_map.table.get("reservations") is not None
    assert not client_map.refused


async def test_sighup_reloads_the_routes_and_the_clients_together(
    make_gateway: MakeGateway, backend: TestServer, client_file: Path, tmp_path: Path
) -> None:
    # Both files already differ from the tables in force: the watcher acts only on changes
    # it sees, so only the signal loads them. One handler must serve both files; a second
    # watcher installing its own would take the signal from the first.
    route_file = tmp_path / "routes.yaml"
    write_file(route_file, routes_for(backend.port).replace("/open", "/opened"))
    client_map = ClientMap(load_clients(client_file), client_file)
    write_file(client_file, ONLINE + APP)
    gw = await make_gateway(routes_for(backend.port), route_file=route_file, client_map=client_map)
    route_map = gw.app[appkeys.ROUTES]
    routes_follow, clients_follow = Follow(route_map), Follow(client_map)

    send_sighup()
    await routes_follow.change()
    await clients_follow.change()

    assert (await gw.get("/opened/news")).status == 200
    assert client_map.table.get("library-app") is not None


# --- library-gateway clients check and run --clients ----------------------------------------


def test_clients_check_accepts_a_good_file_and_summarises_it(client_file: Path) -> None:
    client_file.write_text(ONLINE + APP, encoding="utf-8")

    result = cli("clients", "check", str(client_file), env={"ONLINE_LIBRARY_SECRET": SECRET})

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0] == f"{client_file}: 2 clients OK"
    [online] = [line for line in lines[1:] if line.split()[0] == "online-library"]
    assert online.split()[1:] == [
        "confidential",
        "subject:",
        "public",
        "https://online.example.nl/callback",
    ]
    [app] = [line for line in lines[1:] if line.split()[0] == "library-app"]
    assert app.split()[1:] == [
        "public",
        "subject:",
        "pairwise",
        "https://app.example.nl/callback",
        "https://app.example.nl/silent",
    ]
    assert SECRET not in result.stdout


SEVERAL_PROBLEMS = """\
clients:
  - client_id: online-library
    name: De Online Bibliotheek
    redirect_uris: ["https://online.example.nl/*", "https://online.example.nl/cb#top"]
    secret_env: ONLINE_LIBRARY_SECRET
    id_token_signed_response_alg: none
  - client_id: online-library
    nam: Again
    redirect_uris: [http://online.example.nl/cb]
"""


def test_clients_check_refuses_a_bad_file_naming_every_problem(client_file: Path) -> None:
    client_file.write_text(SEVERAL_PROBLEMS, encoding="utf-8")

    result = cli("clients", "check", str(client_file), env={"ONLINE_LIBRARY_SECRET": "short"})

    assert result.returncode == 1
    assert result.stdout == ""
    expected = [
        (4, "redirect_uris entry 'https://online.example.nl/*' must not contain a wildcard"),
        (4, "redirect_uris entry 'https://online.example.nl/cb#top' must not have a fragment"),
        (5, "secret_env: the secret in ONLINE_LIBRARY_SECRET is too short"),
        (6, "id_token_signed_response_alg 'none' is refused"),
        (7, "client is missing 'name'"),
        (7, "duplicate client_id 'online-library' (first on line 2)"),
        (8, "unknown key 'nam' (did you mean 'name'?"),
        (9, "redirect_uris entry 'http://online.example.nl/cb' must start with https://"),
    ]
    lines = result.stderr.splitlines()
    assert len(lines) == len(expected), result.stderr
    for line_number, reason in expected:
        assert [
            line for line in lines if line.startswith(f"{client_file}:{line_number}: {reason}")
        ], result.stderr


def test_clients_check_reads_secrets_from_the_environment(client_file: Path) -> None:
    result = cli("clients", "check", str(client_file), env={"ONLINE_LIBRARY_SECRET": ""})

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{client_file}:5: secret_env: the environment variable ONLINE_LIBRARY_SECRET is not "
        "set or is empty; set it to the client's secret, or remove secret_env for a public client"
    ]


def test_clients_check_refuses_a_client_named_like_a_route(client_file: Path) -> None:
    client_file.write_text(ONLINE.replace("online-library", "catalogue"), encoding="utf-8")
    env = {"ONLINE_LIBRARY_SECRET": SECRET}
    elsewhere = client_file.parent / "elsewhere" / "routes.yaml"
    elsewhere.parent.mkdir()
    elsewhere.write_text(routes_for(8101), encoding="utf-8")

    # Alone, the file is fine; with the routes beside it, or named, it is not.
    assert cli("clients", "check", str(client_file), env=env).returncode == 0
    named = cli("clients", "check", str(client_file), "--routes", str(elsewhere), env=env)
    (client_file.parent / "routes.yaml").write_text(routes_for(8101), encoding="utf-8")
    beside = cli("clients", "check", str(client_file), env=env)

    for result, routes in ((named, elsewhere), (beside, client_file.parent / "routes.yaml")):
        assert result.returncode == 1
        assert result.stderr.startswith(
            f"{client_file}:2: client_id 'catalogue' is the name of the route on line 2 of {routes}"
        ), result.stderr


def test_clients_check_of_a_missing_file_fails(tmp_path: Path) -> None:
    missing = tmp_path / "clients.yaml"
    result = cli("clients", "check", str(missing))

    assert result.returncode == 1
    assert result.stderr.startswith(f"{missing}:0: cannot read the file")


def test_run_serves_clients_yaml_beside_the_routes_file_or_the_one_given(
    tmp_path: Path,
) -> None:
    routes = tmp_path / "routes.yaml"
    given = tmp_path / "elsewhere.yaml"
    assert clients_path(routes, None) is None
    assert clients_path(routes, given) == given
    (tmp_path / "clients.yaml").write_text("clients: []\n", encoding="utf-8")
    assert clients_path(routes, None) == tmp_path / "clients.yaml"
    assert clients_path(routes, given) == given


def test_run_refuses_a_broken_clients_file_beside_the_routes_before_it_starts(
    client_file: Path,
) -> None:
    routes = client_file.with_name("routes.yaml")
    routes.write_text(routes_for(8101), encoding="utf-8")
    client_file.write_text(ONLINE.replace("online-library", "catalogue"), encoding="utf-8")
    data_dir = client_file.parent / "var"

    result = cli("run", "--routes", str(routes), "--data-dir", str(data_dir))

    assert result.returncode == 1
    assert result.stderr.startswith(f"{client_file}:2: client_id 'catalogue' is the name"), (
        result.stderr
    )
    assert not data_dir.exists()  # refused before any database was made


def test_run_with_a_clients_file_that_is_not_there_fails(tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_for(8101), encoding="utf-8")
    missing = tmp_path / "federation.yaml"
    data_dir = tmp_path / "var"

    result = cli(
        "run", "--routes", str(routes), "--clients", str(missing), "--data-dir", str(data_dir)
    )

    assert result.returncode == 1
    assert result.stderr.startswith(f"{missing}:0: cannot read the file"), result.stderr
    assert not data_dir.exists()
