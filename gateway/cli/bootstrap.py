"""What every command needs before it can touch the database or the cookies.

Shared by `run`, `demo`, `accounts` and `keys`, so that all of them find the same embedded
PostgreSQL and the same cookie keys under one data dir.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from cryptography.fernet import MultiFernet

from auth.sessions.cookies import load_or_create_key_file, parse_keys
from gateway import database
from gateway.config.settings import Settings


def database_url(settings: Settings) -> str:
    """The account database's URL; starts the embedded server when none is configured.

    Blocking (it may run initdb and pg_ctl): call it before the event loop starts, or through
    asyncio.to_thread.
    """
    configured = settings.database_url.reveal()
    if configured:
        return configured
    maintenance = database.start_embedded(settings.data_dir)
    return asyncio.run(database.ensure_database(maintenance))


def cookie_keys(settings: Settings) -> MultiFernet:
    configured = settings.cookie_keys.reveal()
    if configured:
        return parse_keys(configured)
    return parse_keys(load_or_create_key_file(settings.data_dir))


@asynccontextmanager
async def migrated_pool(url: str, settings: Settings | None = None) -> AsyncIterator[asyncpg.Pool]:
    """A small pool on the account database at `url`, its migrations applied first.
    `settings`: where a pooler stands (`GATEWAY_DATABASE_POOLER`,
    `GATEWAY_DATABASE_LISTEN_URL`); without them `url` reaches PostgreSQL itself."""
    settings = settings or Settings()
    await database.migrate(database.direct_url(settings, url))
    pool = await database.create_pool(url, min_size=1, max_size=4, pooler=settings.database_pooler)
    try:
        yield pool
    finally:
        await pool.close()
