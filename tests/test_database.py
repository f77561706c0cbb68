"""Migrations: applied once, in order, also when several instances start at the same time."""

from __future__ import annotations

import asyncio

import asyncpg

from auth.store import schema
from gateway import database


async def test_migrations_are_recorded_and_a_second_run_applies_nothing(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        assert await schema.migrate(conn) == []
        recorded = [
            row["version"]
            for row in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        ]
    finally:
        await conn.close()
    assert recorded == [name for name, _ in schema.migration_files()]


async def test_concurrent_starts_apply_each_migration_exactly_once(postgres_server: str) -> None:
    url = await database.ensure_database(postgres_server, "t_concurrent_migrations")
    connections = [await asyncpg.connect(url) for _ in range(6)]
    try:
        results = await asyncio.gather(*(schema.migrate(conn) for conn in connections))
        applied = [name for result in results for name in result]
        assert sorted(applied) == [name for name, _ in schema.migration_files()]
        count = await connections[0].fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(schema.migration_files())
        tables = {
            row["tablename"]
            for row in await connections[0].fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            )
        }
        assert {"accounts", "sessions", "signing_keys", "schema_migrations"} <= tables
    finally:
        for conn in connections:
            await conn.close()


async def test_ensure_database_is_idempotent_and_concurrent_safe(postgres_server: str) -> None:
    urls = await asyncio.gather(
        *(database.ensure_database(postgres_server, "t_created_twice") for _ in range(4))
    )
    assert len(set(urls)) == 1
    conn = await asyncpg.connect(urls[0])
    try:
        assert await conn.fetchval("SELECT current_database()") == "t_created_twice"
    finally:
        await conn.close()
