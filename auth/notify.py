"""One LISTEN connection per process, for the news every instance must hear at once.

Sessions revoked, accounts changed and signing keys rotated on one instance are announced with
pg_notify; this listener hands each payload to the callback of its channel. When the connection
drops it reconnects with backoff and calls `on_reconnect`, because anything cached before may
have missed a notification.

A connection that LISTENs through a transaction pooler (PgBouncer `pool_mode = transaction`)
looks healthy and never hears a thing: the LISTEN ran on some server connection the pooler
has since given to others. So each new connection first proves that it hears a notification
sent over another way to the database (`proven_by`, the pool); one that does not is never
taken for listening, and what relies on it (the session cache) keeps asking the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import asyncpg

log = logging.getLogger("auth.notify")

CONNECT_TIMEOUT = 10.0
"""Seconds one attempt to (re)connect may take: a database that accepts and never answers
must not hold the listener (and with it the news of a recovery) for asyncpg's default 60."""

PROOF_CHANNEL = "library_gateway_listening"
"""Where a new listening connection sends itself a notification, by way of the pool."""

_FAULTS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


class NotHeard(Exception):
    """The listening connection did not hear the notification it sent itself in time."""


async def _prove(conn: asyncpg.Connection, other_way: asyncpg.Pool, deadline: float) -> None:
    """Return once `conn` hears a notification sent over `other_way` (a pool), or raise."""
    token = secrets.token_hex(16)
    heard = asyncio.Event()

    def check(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        if payload == token:  # every instance hears every other's proof
            heard.set()

    await conn.add_listener(PROOF_CHANNEL, check)
    try:
        async with asyncio.timeout(deadline):
            await other_way.execute("SELECT pg_notify($1, $2)", PROOF_CHANNEL, token)
            await heard.wait()
    except TimeoutError:
        raise NotHeard from None
    finally:
        with contextlib.suppress(*_FAULTS):
            await conn.remove_listener(PROOF_CHANNEL, check)


@contextlib.asynccontextmanager
async def listening(
    url: str,
    handlers: Mapping[str, Callable[[str], None]],
    on_reconnect: Callable[[], None],
    on_lost: Callable[[], None] = lambda: None,
    connect_timeout: float = CONNECT_TIMEOUT,
    proven_by: asyncpg.Pool | None = None,
) -> AsyncIterator[None]:
    """Listen on `url` for the channels of `handlers`. `on_reconnect` is called each time the
    connection is (again) up and listening, `on_lost` each time it is found gone (or could
    not be made, or, with `proven_by`, did not hear within `connect_timeout` a notification
    sent through `proven_by`, a pool on the same database): between the two, notifications
    may be missed."""
    stop = asyncio.Event()
    ready = asyncio.Event()

    def dispatch(_conn: Any, _pid: int, channel: str, payload: str) -> None:
        try:
            handlers[channel](payload)
        except Exception:
            log.exception("notification handler failed", extra={"channel": channel})

    async def connect(lost: asyncio.Event) -> asyncpg.Connection:
        conn = await asyncpg.connect(url, timeout=connect_timeout)
        try:
            conn.add_termination_listener(lambda _c: lost.set())
            for channel in handlers:
                await conn.add_listener(channel, dispatch)
            if proven_by is not None:
                await _prove(conn, proven_by, connect_timeout)
        except BaseException:
            conn.terminate()
            raise
        return conn

    async def run() -> None:
        delay = 0.5
        while not stop.is_set():
            lost = asyncio.Event()
            try:
                conn = await connect(lost)
            except (*_FAULTS, NotHeard) as exc:
                if isinstance(exc, NotHeard):
                    log.error(
                        "the listening connection hears no notification: it must reach"
                        " PostgreSQL itself, not a transaction pooler"
                        " (GATEWAY_DATABASE_LISTEN_URL); cached sessions are read again"
                        " from the database meanwhile"
                    )
                else:
                    log.warning("listener cannot connect", extra={"error": str(exc)})
                on_lost()
                ready.set()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                delay = min(delay * 2, 10)
                continue
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
