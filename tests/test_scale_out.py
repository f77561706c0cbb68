"""Several gateways on one database, as operators run them: real `library-gateway run`
processes, a real PostgreSQL, a real backend on loopback.

What must be shared between instances (sessions, revocations, login throttling, signing keys,
the cookie keys) is shown across two processes; graceful shutdown and the `--workers`
supervisor are shown on one. Nothing here sleeps: a test waits for a log line, or repeats a
request (each one a round trip) until what it waits for is seen or a deadline passes. The
processes and what the tests do with them are tests/gateway_processes.py's.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import jwt
import psutil
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.fernet import Fernet
from prometheus_client.parser import text_string_to_metric_families

from auth.store.schema import migration_files
from gateway import database
from tests.gateway_processes import (
    DEADLINE,
    PASSWORD,
    PUBLIC_URL,
    STARTUP,
    Gateway,
    Gateways,
    add_account,
    base_env,
    cli,
    echo_app,
    http_client,
    identity_on,
    log_in,
    log_out,
    new_cookie_keys,
    routes_file,
    until,
)
from tests.helpers import COOKIE, free_port, received

pytestmark = pytest.mark.slow

Launch = Callable[..., Awaitable[Gateway]]


@dataclass
class Backend:
    """An echo service, and a slow route that answers only when the test says so."""

    server: TestServer
    arrived: asyncio.Event
    release: asyncio.Event

    def routes_file(self, folder: Path) -> Path:
        return routes_file(
            folder,
            self.server.port,
            f"""\
  - name: slow
    prefix: /slow
    backend: http://127.0.0.1:{self.server.port}
    auth: public
""",
        )


@pytest.fixture
async def backend(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> Backend:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow(_request: web.Request) -> web.Response:
        arrived.set()
        await release.wait()
        return web.Response(text="the whole answer")

    app = echo_app()
    app.router.add_get("/slow/{tail:.*}", slow)
    return Backend(await aiohttp_server(app), arrived, release)


@pytest.fixture
def cookie_keys() -> str:
    return new_cookie_keys()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with http_client() as http:
        yield http


@pytest.fixture
async def launch(
    tmp_path: Path,
    database_url: str,
    backend: Backend,
    cookie_keys: str,
    http: aiohttp.ClientSession,
) -> AsyncIterator[Launch]:
    gateways = Gateways(http, tmp_path)
    routes = backend.routes_file(tmp_path)

    async def launch(
        *, keys: str = cookie_keys, workers: int = 1, extra_env: dict[str, str] | None = None
    ) -> Gateway:
        env = {**base_env(database_url, keys), **(extra_env or {})}
        return await gateways.start(routes, env, admin_port=free_port(), workers=workers)

    yield launch
    await gateways.stop()


async def jwks(http: aiohttp.ClientSession, gateway: Gateway) -> jwt.PyJWKSet:
    async with http.get(gateway.url + "/.well-known/jwks.json") as resp:
        return jwt.PyJWKSet.from_dict(await resp.json())


def verified(token: str, keys: jwt.PyJWKSet) -> dict[str, Any]:
    kid = jwt.get_unverified_header(token)["kid"]
    claims: dict[str, Any] = jwt.decode(
        token, keys[kid].key, algorithms=["EdDSA"], audience="echo", issuer=PUBLIC_URL
    )
    return claims


# --- sessions, revocation, throttling and keys across instances ------------------------------


async def test_a_session_from_one_instance_works_on_the_other_until_logout_on_the_first(
    launch: Launch,
    http: aiohttp.ClientSession,
    database_url: str,
    cookie_keys: str,
    tmp_path: Path,
) -> None:
    first, second = await asyncio.gather(launch(), launch())
    account_id, username = await add_account(base_env(database_url, cookie_keys), tmp_path)
    status, cookie = await log_in(http, first, username)
    assert status == 303 and cookie is not None

    seen = await identity_on(http, second, cookie)
    assert seen is not None
    assert seen["x-library-user-id"] == account_id
    assert seen["x-library-username"] == username
    # Both instances sign with the same key: the second one's token verifies with the
    # first one's published keys.
    assert verified(seen["x-library-identity"], await jwks(http, first))["sub"] == account_id

    await log_out(http, first, cookie)
    assert await identity_on(http, first, cookie) is None
    # The second instance had the session in its cache (kept 30 s without news); the logout's
    # notification must end it there well before that.
    await until(
        http, second.url + "/echo/whoami", lambda status: status == 401, cookie=cookie, deadline=5.0
    )
    assert await identity_on(http, second, cookie) is None


async def test_the_access_log_has_a_line_a_request_and_no_secret(
    launch: Launch,
    http: aiohttp.ClientSession,
    database_url: str,
    cookie_keys: str,
    tmp_path: Path,
) -> None:
    """What operators read (one JSON object a line, with the request id the client got back)
    and what must never be in it: the password, the session cookie, the query string (reset
    tokens travel in links) or a credential header."""
    gateway = await launch()
    account_id, username = await add_account(base_env(database_url, cookie_keys), tmp_path)
    status, cookie = await log_in(http, gateway, username)
    assert status == 303 and cookie is not None
    since = len(gateway.logs)
    async with http.get(
        gateway.url + "/echo/shelf?token=query-secret-123",
        headers={
            "Cookie": f"{COOKIE}={cookie}",
            "X-Request-Id": "access-1",
            "Authorization": "Bearer header-secret-456",
        },
    ) as resp:
        assert resp.status == 200
        assert resp.headers["X-Request-Id"] == "access-1"
        body = await resp.read()
    _, line = await gateway.wait_for_log(
        lambda entry: entry.get("request_id") == "access-1" and entry["message"] == "request", since
    )
    assert line["logger"] == "gateway.access" and line["level"] == "info"
    assert {key: line[key] for key in ("method", "path", "route", "status", "user_id")} == {
        "method": "GET",
        "path": "/echo/shelf",
        "route": "echo",
        "status": 200,
        "user_id": account_id,
    }
    assert len(body) < line["bytes"] < len(body) + 2048  # what was sent, the head included
    assert line["duration_ms"] >= 0 and line["client"] == "127.0.0.1"
    # The W3C trace the backend was given is the one the line names.
    [traceparent] = received(json.loads(body))["traceparent"]
    assert traceparent.split("-")[1] == line["trace_id"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    written = json.dumps(gateway.logs)
    for secret in (PASSWORD, cookie, "query-secret-123", "header-secret-456"):
        assert secret not in written


async def test_failed_logins_on_either_instance_count_towards_one_block(
    launch: Launch,
    http: aiohttp.ClientSession,
    database_url: str,
    cookie_keys: str,
    tmp_path: Path,
) -> None:
    first, second = await asyncio.gather(launch(), launch())
    _account_id, username = await add_account(base_env(database_url, cookie_keys), tmp_path)
    # Five failures are free (auth.throttle.Policy); spread them over both instances.
    for gateway in (first, second, first, second, first):
        status, cookie = await log_in(http, gateway, username, "not the password at all")
        assert (status, cookie) == (401, None)
    for gateway in (second, first):
        status, cookie = await log_in(http, gateway, username)  # the right password
        assert (status, cookie) == (429, None)


async def test_a_signing_key_rotated_from_the_command_line_reaches_every_instance(
    launch: Launch,
    http: aiohttp.ClientSession,
    database_url: str,
    cookie_keys: str,
    tmp_path: Path,
) -> None:
    first, second = await asyncio.gather(launch(), launch())
    env = base_env(database_url, cookie_keys)
    _account_id, username = await add_account(env, tmp_path)
    _status, cookie = await log_in(http, first, username)
    assert cookie is not None
    seen = await identity_on(http, second, cookie)
    assert seen is not None
    old_kid = jwt.get_unverified_header(seen["x-library-identity"])["kid"]

    code, out, err = await cli(env, "keys", "rotate", "--data-dir", str(tmp_path))
    assert code == 0, err
    found = re.search(r"new active signing key: (\S+)", out)
    assert found is not None, out
    new_kid = found.group(1)
    assert new_kid != old_kid

    for gateway in (first, second):
        loop = asyncio.get_running_loop()
        end = loop.time() + DEADLINE
        kid = old_kid
        while kid != new_kid and loop.time() < end:
            identity = await identity_on(http, gateway, cookie)
            assert identity is not None
            token = identity["x-library-identity"]
            kid = jwt.get_unverified_header(token)["kid"]
        assert kid == new_kid
        published = await jwks(http, gateway)
        # The old key stays published, so tokens signed just before the rotation verify.
        assert {key.key_id for key in published.keys} >= {old_kid, new_kid}
        assert verified(token, published)["aud"] == "echo"


async def test_cookie_keys_rotated_in_three_steps_keep_patrons_logged_in_across_a_rollout(
    launch: Launch,
    http: aiohttp.ClientSession,
    database_url: str,
    tmp_path: Path,
) -> None:
    """docs/operations.md's procedure: OLD -> OLD,NEW -> NEW,OLD -> NEW. During a rolling
    restart instances of neighbouring steps serve side by side, and must read each other's
    cookies."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    # The instances that can read keys made with OLD start first: each start makes a signing
    # key if none it can read exists, and the last step's instance cannot read OLD's.
    before, accepting, switched = await asyncio.gather(
        launch(keys=old), launch(keys=f"{old},{new}"), launch(keys=f"{new},{old}")
    )
    retired = await launch(keys=new)
    account_id, username = await add_account(base_env(database_url, old), tmp_path)

    _status, made_with_old = await log_in(http, before, username)
    _status, made_with_new = await log_in(http, switched, username)
    assert made_with_old is not None and made_with_new is not None

    async def user_on(gateway: Gateway, cookie: str) -> str | None:
        seen = await identity_on(http, gateway, cookie)
        return None if seen is None else seen["x-library-user-id"]

    # Neighbouring steps read each other's cookies ...
    assert await user_on(accepting, made_with_old) == account_id
    assert await user_on(switched, made_with_old) == account_id
    assert await user_on(accepting, made_with_new) == account_id
    assert await user_on(retired, made_with_new) == account_id
    # ... and skipping a step logs patrons out: why the procedure has three.
    assert await user_on(before, made_with_new) is None
    assert await user_on(retired, made_with_old) is None


# --- graceful shutdown ---------------------------------------------------------------------


async def test_sigterm_lets_a_request_in_flight_finish_then_exits_0(
    launch: Launch,
    http: aiohttp.ClientSession,
    backend: Backend,
) -> None:
    gateway = await launch(extra_env={"GATEWAY_SHUTDOWN_GRACE": "60"})

    async def fetch_slow() -> tuple[int, str]:
        async with http.get(gateway.url + "/slow/book") as resp:
            return resp.status, await resp.text()

    in_flight = asyncio.create_task(fetch_slow())
    async with asyncio.timeout(STARTUP):
        await backend.arrived.wait()
    gateway.process.send_signal(signal.SIGTERM)

    # Draining: the admin listener still answers, and says not ready ...
    await until(http, gateway.admin_url + "/readyz", lambda status: status == 503)
    async with http.get(gateway.admin_url + "/readyz") as resp:
        assert (await resp.json())["draining"] is True
    # ... the main listener is closed, so a load balancer's new connections go elsewhere ...
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", gateway.port)
    # ... and the request that arrived before SIGTERM is still being waited for.
    assert not in_flight.done()
    assert gateway.process.returncode is None

    backend.release.set()
    assert await in_flight == (200, "the whole answer")
    async with asyncio.timeout(STARTUP):
        assert await gateway.process.wait() == 0
    await gateway.stop()
    assert any(
        entry.get("path") == "/slow/book" and entry.get("status") == 200 for entry in gateway.logs
    )


# --- several workers on one port -----------------------------------------------------------


def listens_on(pid: int, port: int) -> bool:
    return any(
        conn.status == psutil.CONN_LISTEN and conn.laddr.port == port
        for conn in psutil.Process(pid).net_connections(kind="tcp")
    )


def echo_requests_counted(exposition: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "gateway_requests_total" and sample.labels["route"] == "echo"
    )


async def test_workers_share_one_port_and_a_killed_worker_is_replaced(
    launch: Launch,
    http: aiohttp.ClientSession,
    database_url: str,
    cookie_keys: str,
    tmp_path: Path,
) -> None:
    gateway = await launch(workers=2)
    supervisor = psutil.Process(gateway.process.pid)
    workers = {entry["pid"] for entry in gateway.logs if entry["message"] == "gateway listening"}
    assert len(workers) == 2
    assert {child.pid for child in supervisor.children()} == workers

    _account_id, username = await add_account(base_env(database_url, cookie_keys), tmp_path)
    _status, cookie = await log_in(http, gateway, username)
    assert cookie is not None
    answered = 0

    async def serve_requests(count: int) -> None:
        nonlocal answered
        for _ in range(count):
            assert await identity_on(http, gateway, cookie) is not None
            answered += 1

    # Requests on new connections until both workers listen (until then, one serves all).
    loop = asyncio.get_running_loop()
    end = loop.time() + STARTUP
    while not all(listens_on(pid, gateway.port) for pid in workers):
        assert loop.time() < end, "a worker never listened"
        await serve_requests(1)
    await serve_requests(10)

    # The admin port sums every worker's metrics (each kept its own count of these).
    await until(http, gateway.admin_url + "/metrics", lambda status: status == 200)
    loop_end = loop.time() + DEADLINE
    counted = -1.0
    while counted != answered and loop.time() < loop_end:
        async with http.get(gateway.admin_url + "/metrics") as resp:
            counted = echo_requests_counted(await resp.text())
    assert counted == answered

    # Kill the worker without the admin listener: the port keeps answering.
    [admin_worker] = [pid for pid in workers if listens_on(pid, gateway.admin_port)]
    [victim] = workers - {admin_worker}
    since = len(gateway.logs)
    os.kill(victim, signal.SIGKILL)
    died, _ = await gateway.wait_for_log(
        lambda entry: (
            entry["message"] == "worker died; starting a new one" and entry.get("pid") == victim
        ),
        since,
    )
    await serve_requests(10)

    # The supervisor starts a replacement, which takes its share of the port.
    _, started = await gateway.wait_for_log(
        lambda entry: entry["message"] == "gateway listening", died
    )
    replacement = int(started["pid"])
    assert replacement not in workers
    assert replacement in {child.pid for child in supervisor.children()}
    end = loop.time() + STARTUP
    while not listens_on(replacement, gateway.port):
        assert loop.time() < end, "the replacement never listened"
        await serve_requests(1)

    # With the last original worker gone too, the workers started since serve everything.
    since = len(gateway.logs)
    os.kill(admin_worker, signal.SIGKILL)
    died, _ = await gateway.wait_for_log(
        lambda entry: (
            entry["message"] == "worker died; starting a new one"
            and entry.get("pid") == admin_worker
        ),
        since,
    )
    await serve_requests(10)
    await gateway.wait_for_log(lambda entry: entry["message"] == "gateway listening", died)

    gateway.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(STARTUP):
        assert await gateway.process.wait() == 0
    # Every worker it ever started has ended with it.
    every_worker = {
        entry["pid"] for entry in gateway.logs if entry["message"] == "gateway listening"
    }
    assert len(every_worker) >= 4
    assert not any(psutil.pid_exists(pid) for pid in every_worker)


# --- migrations ----------------------------------------------------------------------------


async def test_migrate_run_twice_at_once_applies_each_migration_exactly_once(
    postgres_server: str,
    cookie_keys: str,
    tmp_path: Path,
) -> None:
    url = await database.ensure_database(postgres_server, "t_migrate_" + secrets.token_hex(3))
    env = base_env(url, cookie_keys)
    runs = await asyncio.gather(
        *(cli(env, "migrate", "--data-dir", str(tmp_path / str(n))) for n in range(2))
    )
    assert [code for code, _out, _err in runs] == [0, 0], runs
    names = [name for name, _sql in migration_files()]
    outputs = sorted(out.strip() for _code, out, _err in runs)
    assert outputs == sorted(["applied: " + ", ".join(names), "the database schema is up to date"])
    conn = await asyncpg.connect(url)
    try:
        recorded = [
            row["version"]
            for row in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        ]
    finally:
        await conn.close()
    assert recorded == names
    again = await cli(env, "migrate", "--data-dir", str(tmp_path / "again"))
    assert again[:2] == (0, "the database schema is up to date\n")


async def test_migrate_without_a_reachable_database_says_so_and_exits_1(
    cookie_keys: str,
    tmp_path: Path,
) -> None:
    env = base_env(
        f"postgresql://gateway:secret-password@127.0.0.1:{free_port()}/gateway", cookie_keys
    )
    code, out, err = await cli(env, "migrate", "--data-dir", str(tmp_path))
    assert code == 1
    assert "cannot migrate the database" in err
    assert "Traceback" not in err
    assert "secret-password" not in out + err


async def test_sigterm_while_a_dead_worker_is_being_replaced_still_stops_the_supervisor(
    launch: Launch,
) -> None:
    gateway = await launch(workers=2)
    workers = [entry["pid"] for entry in gateway.logs if entry["message"] == "gateway listening"]
    since = len(gateway.logs)
    os.kill(workers[0], signal.SIGKILL)
    await gateway.wait_for_log(
        lambda entry: (
            entry["message"] == "worker died; starting a new one" and entry.get("pid") == workers[0]
        ),
        since,
    )
    # The supervisor is now about to start a replacement: stopping must win over replacing,
    # or a worker started after the SIGTERM keeps the supervisor (and the port) alive.
    gateway.process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(DEADLINE):
        assert await gateway.process.wait() == 0


async def test_a_disabled_accounts_tokens_are_inactive_at_once_on_every_instance(
    launch: Launch,
    http: aiohttp.ClientSession,
    database_url: str,
    cookie_keys: str,
    tmp_path: Path,
) -> None:
    """Two gateway processes serving one connected library: tokens issued by the first are
    good at the second, and the moment the account is disabled (on the command line, a
    third process) neither takes them any more, refresh token included: nothing is cached
    where a revocation could miss it."""
    secret = secrets.token_hex(32)
    redirect = "https://online.example.nl/callback"
    (tmp_path / "clients.yaml").write_text(  # beside routes.yaml: read by default
        f"clients:\n  - client_id: online\n    name: Online\n    redirect_uris: [{redirect}]\n"
        "    secret_env: ONLINE_SECRET\n",
        encoding="utf-8",
    )
    env = {"ONLINE_SECRET": secret}
    first, second = await launch(extra_env=env), await launch(extra_env=env)
    _account_id, username = await add_account(base_env(database_url, cookie_keys), tmp_path)
    status, cookie = await log_in(http, first, username)
    assert status == 303 and cookie is not None
    query = {
        "response_type": "code",
        "client_id": "online",
        "redirect_uri": redirect,
        "scope": "openid offline_access",
        "state": "s",
    }
    async with http.get(
        first.url + "/auth/oidc/authorize",
        params=query,
        headers={"Cookie": f"{COOKIE}={cookie}"},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 302, await resp.text()
        code = re.search(r"[?&]code=([^&]+)", resp.headers["Location"])
    assert code is not None
    credentials = {"Authorization": aiohttp.encode_basic_auth("online", secret)}
    async with http.post(
        first.url + "/auth/oidc/token",
        data={"grant_type": "authorization_code", "code": code.group(1), "redirect_uri": redirect},
        headers=credentials,
    ) as resp:
        assert resp.status == 200, await resp.text()
        tokens = await resp.json()

    async def active(gateway: Gateway, token: str) -> bool:
        async with http.post(
            gateway.url + "/auth/oidc/introspect", data={"token": token}, headers=credentials
        ) as resp:
            assert resp.status == 200
            return bool((await resp.json())["active"])

    for gateway in (first, second):
        assert await active(gateway, tokens["access_token"])
        assert await active(gateway, tokens["refresh_token"])
    code_, _out, err = await cli(
        base_env(database_url, cookie_keys),
        "accounts",
        "disable",
        "--username",
        username,
        "--data-dir",
        str(tmp_path / "cli"),
    )
    assert code_ == 0, err
    for gateway in (first, second):
        assert not await active(gateway, tokens["access_token"])
        assert not await active(gateway, tokens["refresh_token"])
        async with http.get(
            gateway.url + "/auth/oidc/userinfo",
            headers={"Authorization": f"Bearer {tokens['access_token']}"},
        ) as resp:
            assert resp.status == 401
    async with http.post(
        second.url + "/auth/oidc/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=credentials,
    ) as resp:
        assert resp.status == 400 and (await resp.json())["error"] == "invalid_grant"


async def test_run_reads_institutions_yaml_beside_the_routes_and_enforces_a_rule(
    launch: Launch,
    http: aiohttp.ClientSession,
    database_url: str,
    cookie_keys: str,
    tmp_path: Path,
    backend: Backend,
) -> None:
    """The operator's way: institutions.yaml beside routes.yaml, a route that requires a
    membership of the second library; a patron without it is refused (JSON to a script,
    never a login), and a membership added on the command line opens the route at once."""
    (tmp_path / "institutions.yaml").write_text(
        "institutions:\n"
        "  - id: kb\n    name: Koninklijke Bibliotheek\n    default: true\n"
        "  - id: obs\n    name: Bibliotheek Rivierenland\n"
        "    renew_url: https://www.example.org/lid-worden\n",
        encoding="utf-8",
    )
    (tmp_path / "routes.yaml").write_text(
        f"routes:\n  - name: echo\n    prefix: /echo\n"
        f"    backend: http://127.0.0.1:{backend.server.port}\n    auth: required\n"
        "    require: {institution: obs}\n",
        encoding="utf-8",
    )
    gateway = await launch()
    env = base_env(database_url, cookie_keys)
    _account_id, username = await add_account(env, tmp_path)
    status, cookie = await log_in(http, gateway, username)
    assert status == 303 and cookie is not None
    sent = {"Cookie": f"{COOKIE}={cookie}", "Accept": "application/json"}
    async with http.get(gateway.url + "/echo/e-books", headers=sent) as resp:
        assert resp.status == 403
        refusal = await resp.json()
    assert refusal["error"] == "membership_required" and refusal["institution"] == "obs"
    assert refusal["renew_url"] == "https://www.example.org/lid-worden"
    code, out, err = await cli(
        env,
        "accounts",
        "membership",
        "add",
        "--account",
        username,
        "--institution",
        "obs",
        "--pass-number",
        "RL-1001",
        "--institutions",
        str(tmp_path / "institutions.yaml"),
        "--data-dir",
        str(tmp_path / "cli"),
    )
    assert code == 0, err + out
    async with http.get(gateway.url + "/echo/e-books", headers=sent) as resp:
        assert resp.status == 200
        seen = received(await resp.json())
    assert seen["x-library-memberships"] == ["kb::,obs::"]
