"""Brute-force defence: failed logins counted in PostgreSQL, with growing temporary blocks.

Counters are kept per account (username and pass number of one account share one), per
unknown login name (so an unknown name is throttled exactly like a real one and the answer
never tells them apart) and per client address (one password tried against many accounts).
A block is temporary and answered 429 with Retry-After; while it lasts even the right password
is refused; a success clears the account's counter. Password reset is never blocked by it.

The policy is a pure function of the failure count, `block_for`, tested on its own.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web

CLIENT_ADDRESS = web.RequestKey("client_address", str)


@dataclass(frozen=True)
class Policy:
    free_failures: int = 5  # failures before the first block
    first_block: float = 30.0  # seconds; doubles with every further failure
    longest_block: float = 900.0
    forget_after: float = 86400.0  # a counter idle this long starts again from zero
    address_free_failures: int = 30


def block_for(failures: int, free: int, policy: Policy) -> float:
    """Seconds to block after `failures` consecutive failures (0: no block)."""
    if failures < free:
        return 0.0
    exponent = min(failures - free, 32)
    return min(policy.first_block * math.pow(2, exponent), policy.longest_block)


def address_key(address: str) -> str:
    """IPv6 clients are counted per /64: one machine can hold a whole /64."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"addr:{address}"
    if ip.version == 6:
        return f"addr:{ipaddress.ip_network(f'{ip}/64', strict=False)}"
    return f"addr:{ip}"


def account_key(account_id: str | None, canonical_name: str) -> str:
    return f"account:{account_id}" if account_id else f"name:{canonical_name}"


class Throttle:
    def __init__(self, pool: asyncpg.Pool, policy: Policy | None = None) -> None:
        self._pool = pool
        self.policy = policy or Policy()

    async def retry_after(self, *keys: str) -> float:
        """Seconds until every given key may try again (0: not blocked)."""
        seconds = await self._pool.fetchval(
            "SELECT GREATEST(0, EXTRACT(EPOCH FROM max(blocked_until) - now()))::float8"
            " FROM login_throttle WHERE key = ANY($1::text[])",
            list(keys),
        )
        return float(seconds or 0.0)

    async def failed(self, account: str, address: str) -> None:
        policy = self.policy
        async with self._pool.acquire() as conn, conn.transaction():
            for key, free in (
                (account, policy.free_failures),
                (address, policy.address_free_failures),
            ):
                failures = await conn.fetchval(
                    "INSERT INTO login_throttle AS t (key, failures) VALUES ($1, 1)"
                    " ON CONFLICT (key) DO UPDATE SET"
                    "   failures = CASE WHEN t.last_failure_at < now() - make_interval(secs => $2)"
                    "              THEN 1 ELSE t.failures + 1 END,"
                    "   last_failure_at = now()"
                    " RETURNING failures",
                    key,
                    policy.forget_after,
                )
                seconds = block_for(int(failures), free, policy)
                if seconds:
                    await conn.execute(
                        "UPDATE login_throttle SET blocked_until ="
                        " now() + make_interval(secs => $2) WHERE key = $1",
                        key,
                        seconds,
                    )

    async def succeeded(self, account: str, *, conn: Any = None) -> None:
        executor = conn if conn is not None else self._pool
        await executor.execute("DELETE FROM login_throttle WHERE key = $1", account)

    async def purge(self) -> int:
        status = await self._pool.execute(
            "DELETE FROM login_throttle WHERE last_failure_at < now() - make_interval(secs => $1)"
            " AND (blocked_until IS NULL OR blocked_until < now())",
            self.policy.forget_after,
        )
        return int(status.split()[-1])
