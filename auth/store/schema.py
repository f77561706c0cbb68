"""Bringing the account database's schema up to date.

Migrations are plain SQL files in auth/store/migrations, applied in name order, each in its
own transaction and recorded in `schema_migrations`. A PostgreSQL advisory lock serialises
concurrent starts, so several instances booting at once apply each file exactly once.
"""

from __future__ import annotations

import logging
from importlib import resources

import asyncpg

log = logging.getLogger("gateway.database")

# Any fixed 64-bit number, the same in every instance: the key of the migration lock.
_MIGRATION_LOCK = 0x6C6962676174  # "libgat"


def migration_files() -> list[tuple[str, str]]:
    folder = resources.files("auth.store") / "migrations"
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
        # Asked first, not `CREATE TABLE IF NOT EXISTS`: that needs the right to create in
        # the schema even when the table is there, and the gateway may run as a role that
        # only uses the tables (docs/operations.md, "The application's database role").
        if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
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
