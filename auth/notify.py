"""One LISTEN connection per process, for the news every instance must hear at once.

Sessions revoked, accounts changed and signing keys rotated on one instance are announced with
pg_notify; this listener hands each payload to the callback of its channel. When the connection
drops it reconnects with backoff and calls `on_reconnect`, because anything cached before may
have missed a notification.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import asyncpg

log = logging.getLogger("auth.notify")

CONNECT_TIMEOUT = 10.0
"""Seconds one attempt to (re)connect may take: a database that accepts and never answers
must not hold the listener (and with it the news of a recovery) for asyncpg's default 60."""


@contextlib.asynccontextmanager
async def listening(
    url: str,
    handlers: Mapping[str, Callable[[str], None]],
    on_reconnect: Callable[[], None],
    on_lost: Callable[[], None] = lambda: None,
    connect_timeout: float = CONNECT_TIMEOUT,
) -> AsyncIterator[None]:
    """Listen on `url` for the channels of `handlers`. `on_reconnect` is called each time the
    connection is (again) up and listening, `on_lost` each time it is found gone (or could
    not be made): between the two, notifications may be missed."""
    stop = asyncio.Event()
    ready = asyncio.Event()

    def dispatch(_conn: Any, _pid: int, channel: str, payload: str) -> None:
        try:
            handlers[channel](payload)
        except Exception:
            log.exception("notification handler failed", extra={"channel": channel})

    async def run() -> None:
        delay = 0.5
        while not stop.is_set():
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(url, timeout=connect_timeout)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("listener cannot connect", extra={"error": str(exc)})
                on_lost()
                ready.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 10)
                continue
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())
            for channel in handlers:
                await conn.add_listener(channel, dispatch)
            on_reconnect()
            ready.set()
            delay = 0.5
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())}
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)
            if lost.is_set() and not stop.is_set():
                on_lost()
                log.warning("listener lost its connection; reconnecting")

    task = asyncio.create_task(run())
    await ready.wait()
    try:
        yield
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
