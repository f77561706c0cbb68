"""Real `library-gateway run` processes for the tests that start them: several instances on one
database (tests/test_scale_out.py), the gateway behind PgBouncer (tests/test_pgbouncer.py),
the audit trail of a real process (tests/test_audit_process.py).

What those tests share lives here once: the settings a process starts with (`base_env`), a
running process and its JSON log lines (`Gateway`), starting and stopping a test's processes
(`Gateways`), the echo backend and its route, the command line (`cli`, `add_account`) and
a patron's login and logout through the real pages. Plain classes and functions, no pytest
fixtures: a fixture imported into a test module trips ruff's F811 where a test names it as
an argument, so each module keeps its own fixtures and they call in here.

Nothing here sleeps: a test waits for a log line (`Gateway.wait_for_log`), or repeats a
request (each one a round trip) until what it waits for is seen or a deadline passes (`until`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from cryptography.fernet import Fernet

from tests.helpers import COOKIE, csrf_in, free_port, identity_seen

PUBLIC_URL = "http://login.library.test"  # the same on every instance; never contacted
PASSWORD = "a quiet reading room at dusk"
# How long a test waits for something another process does, at most. Not a timing claim:
# what is waited for normally arrives in a few milliseconds.
DEADLINE = 10.0
STARTUP = 60.0


def base_env(database_url: str, cookie_keys: str) -> dict[str, str]:
    """The environment of a gateway process or command: this one's without any GATEWAY_
    setting of its own, then the database, the cookie keys, the public URL and INFO logs."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("GATEWAY_") and key != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(
        GATEWAY_DATABASE_URL=database_url,
        GATEWAY_COOKIE_KEYS=cookie_keys,
        GATEWAY_PUBLIC_URL=PUBLIC_URL,
        GATEWAY_LOG_LEVEL="INFO",
    )
    return env


def new_cookie_keys() -> str:
    """A fresh GATEWAY_COOKIE_KEYS value: one Fernet key."""
    return Fernet.generate_key().decode("ascii")


@contextlib.asynccontextmanager
async def http_client() -> AsyncIterator[aiohttp.ClientSession]:
    """The tests' HTTP client. No cookie jar (every request names its cookie) and a new
    connection for every request, so no connection to a stopping process is reused and
    SO_REUSEPORT spreads them."""
    async with aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(), connector=aiohttp.TCPConnector(force_close=True)
    ) as http:
        yield http


# --- the backend -----------------------------------------------------------------------------


async def echo(request: web.Request) -> web.Response:
    """The request's path and headers, as JSON: what the gateway sent the backend."""
    return web.json_response(
        {"path": request.raw_path, "headers": [[k, v] for k, v in request.headers.items()]}
    )


def echo_app() -> web.Application:
    """A backend with `echo` under /echo/."""
    app = web.Application()
    app.router.add_route("*", "/echo/{tail:.*}", echo)
    return app


def routes_file(folder: Path, backend_port: int | None, extra: str = "") -> Path:
    """`folder`/routes.yaml: the route `echo`, /echo to the backend on `backend_port` (a
    started server's), login required; then the routes in `extra`."""
    assert backend_port is not None, "the backend server has not started"
    path = folder / "routes.yaml"
    path.write_text(
        f"""\
routes:
  - name: echo
    prefix: /echo
    backend: http://127.0.0.1:{backend_port}
    auth: required
{extra}""",
        encoding="utf-8",
    )
    return path


# --- gateway processes -----------------------------------------------------------------------


@dataclass
class Gateway:
    """A running `library-gateway run` and its log lines (JSON), read as they come."""

    process: asyncio.subprocess.Process
    port: int
    admin_port: int
    logs: list[dict[str, Any]] = field(default_factory=list)
    _news: asyncio.Condition = field(default_factory=asyncio.Condition)
    _reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_url(self) -> str:
        return f"http://127.0.0.1:{self.admin_port}"

    def start_reading(self) -> None:
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        # Always drained, or a full pipe would block the gateway's logging.
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").strip()
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {"message": line, "unparsed": True}
            async with self._news:
                self.logs.append(entry if isinstance(entry, dict) else {"message": line})
                self._news.notify_all()
        async with self._news:
            self.logs.append({"message": "<stderr closed>"})
            self._news.notify_all()

    async def wait_for_log(
        self, wanted: Callable[[dict[str, Any]], bool], since: int = 0
    ) -> tuple[int, dict[str, Any]]:
        """The first log entry from index `since` on that `wanted` accepts, and its index."""

        def found() -> tuple[int, dict[str, Any]] | None:
            for index in range(since, len(self.logs)):
                if wanted(self.logs[index]):
                    return index, self.logs[index]
            return None

        async with asyncio.timeout(STARTUP), self._news:
            await self._news.wait_for(
                lambda: (
                    found() is not None
                    or (bool(self.logs) and self.logs[-1]["message"] == "<stderr closed>")
                )
            )
            result = found()
        assert result is not None, "the gateway stopped first:\n" + self.log_text()
        return result

    def log_text(self) -> str:
        return "\n".join(json.dumps(entry) for entry in self.logs[-40:])

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # the supervisor's workers too
            await self.process.wait()
        if self._reader is not None:
            await self._reader


class Gateways:
    """The gateway processes one test starts, each with a data folder of its own in `folder`;
    `stop` ends every one of them (a test's `launch` fixture calls it at its end)."""

    def __init__(self, http: aiohttp.ClientSession, folder: Path) -> None:
        self.http = http
        self.folder = folder
        self.started: list[Gateway] = []

    async def start(
        self, routes: Path, env: dict[str, str], *, admin_port: int = 0, workers: int = 1
    ) -> Gateway:
        """`library-gateway run` with the `routes` file on a free port, in exactly `env`,
        its admin listener on `admin_port` (0: none) and `workers` processes; returned once
        every worker has logged that it listens and /readyz answers 200."""
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway",
            "run",
            "--routes",
            str(routes),
            "--port",
            str(port),
            "--admin-port",
            str(admin_port),
            "--workers",
            str(workers),
            "--data-dir",
            str(self.folder / f"gateway-{len(self.started)}"),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        gateway = Gateway(process, port, admin_port)
        self.started.append(gateway)
        gateway.start_reading()
        seen = 0
        for _ in range(workers):  # one "listening" line per worker
            index, _entry = await gateway.wait_for_log(
                lambda entry: entry["message"] == "gateway listening", seen
            )
            seen = index + 1
        await until(
            self.http, gateway.url + "/readyz", lambda status: status == 200, deadline=STARTUP
        )
        return gateway

    async def stop(self) -> None:
        for gateway in self.started:
            await gateway.stop()


async def until(
    http: aiohttp.ClientSession,
    url: str,
    done: Callable[[int], bool],
    *,
    cookie: str | None = None,
    deadline: float = DEADLINE,
) -> int:
    """Repeat GET `url` until `done(status)`; a refused connection counts as status 0.
    Returns the status that ended the wait; fails if the deadline passes first."""
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline
    headers = {"Accept": "application/json"}
    if cookie is not None:
        headers["Cookie"] = f"{COOKIE}={cookie}"
    status = -1
    while loop.time() < end:
        try:
            async with http.get(url, headers=headers, allow_redirects=False) as resp:
                status = resp.status
        except aiohttp.ClientConnectionError:
            status = 0
        if done(status):
            return status
    raise AssertionError(f"{url}: still {status} after {deadline} s")


# --- the command line ------------------------------------------------------------------------


async def cli(env: dict[str, str], *args: str, stdin: str = "") -> tuple[int, str, str]:
    """`library-gateway *args` in `env`, `stdin` its input: the exit code, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(STARTUP):
        out, err = await process.communicate(stdin.encode())
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def add_account(env: dict[str, str], data_dir: Path) -> tuple[str, str]:
    """Create an account the way an operator does; return its id and username."""
    number = str(10**8 + secrets.randbelow(10**8))
    username = f"reader.{number}"
    code, out, err = await cli(
        env,
        "accounts",
        "add",
        "--pass-number",
        number,
        "--email",
        f"{username}@example.org",
        "--username",
        username,
        "--password-stdin",
        "--data-dir",
        str(data_dir),
        stdin=PASSWORD + "\n",
    )
    assert code == 0, err
    found = re.match(r"account (\S+) created", out)
    assert found is not None, out
    return found.group(1), username


# --- a patron through the real pages ---------------------------------------------------------


async def log_in(
    http: aiohttp.ClientSession, gateway: Gateway, name: str, password: str = PASSWORD
) -> tuple[int, str | None]:
    """Log in through the real form; the status and the new session cookie."""
    async with http.get(gateway.url + "/auth/login") as resp:
        assert resp.status == 200
        anonymous = resp.cookies[COOKIE].value
        token = csrf_in(await resp.text())
    async with http.post(
        gateway.url + "/auth/login",
        allow_redirects=False,
        headers={"Cookie": f"{COOKIE}={anonymous}"},
        data={"csrf_token": token, "username": name, "password": password, "next": "/echo/"},
    ) as resp:
        cookie = resp.cookies.get(COOKIE)
        return resp.status, cookie.value if cookie is not None and cookie.value else None


async def log_out(http: aiohttp.ClientSession, gateway: Gateway, cookie: str) -> None:
    sent = {"Cookie": f"{COOKIE}={cookie}"}
    async with http.get(gateway.url + "/auth/logout", headers=sent) as resp:
        token = csrf_in(await resp.text())
    async with http.post(
        gateway.url + "/auth/logout",
        headers=sent,
        allow_redirects=False,
        data={"csrf_token": token},
    ) as resp:
        assert resp.status == 303


async def identity_on(
    http: aiohttp.ClientSession, gateway: Gateway, cookie: str
) -> dict[str, str] | None:
    """The identity headers the backend gets through `gateway` with this cookie; None when
    the gateway refuses the request as anonymous."""
    async with http.get(
        gateway.url + "/echo/whoami",
        allow_redirects=False,
        headers={"Cookie": f"{COOKIE}={cookie}", "Accept": "application/json"},
    ) as resp:
        if resp.status == 401:
            return None
        assert resp.status == 200, await resp.text()
        return identity_seen(await resp.json())
