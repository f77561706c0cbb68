"""When the account database cannot be asked: one exception for it, and how to recognise it.

A database that is down, refuses connections, or accepts them and never answers shows itself
in many shapes: asyncpg's connection errors, PostgreSQL shutting down or refusing new
connections, `TimeoutError` from a connect, a pool acquire or a statement deadline, `OSError`
from the socket. `unavailable` says whether an exception is one of those, so the edge of a
request (`gateway.exchange.guarded`) answers 503 for them and 500 only for real faults, and the
session registry knows when to fall back on what it heard before (`SessionRegistry.lookup`).

`TimeoutError` and `OSError` count only when asyncpg raised them (a frame of asyncpg is on
their way up): a timeout of a backend or a mail server is not the database's.
"""

from __future__ import annotations

import asyncpg

RETRY_AFTER = 5
"""Seconds a client is asked to wait (`Retry-After`) before trying again."""

_ALWAYS = (
    asyncpg.PostgresConnectionError,  # class 08: the connection failed or is gone
    asyncpg.OperatorInterventionError,  # class 57: shutting down, starting up, cancelled
    asyncpg.InsufficientResourcesError,  # class 53: too many connections, out of memory
    asyncpg.InterfaceError,  # the client's side: the connection or the pool is closed
)


class DatabaseUnavailable(Exception):
    """The account database could not be reached, or did not answer within its deadline."""


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from) means the database is away rather than a
    fault."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (DatabaseUnavailable, *_ALWAYS)):
            return True
        if isinstance(current, OSError) and _raised_in_asyncpg(current):
            return True  # TimeoutError is an OSError
        current = current.__cause__
    return False


def _raised_in_asyncpg(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__", "").startswith("asyncpg."):
            return True
        tb = tb.tb_next
    return False
