"""Brute-force defence: failed logins counted in PostgreSQL, shared by every instance.

Three kinds of counter, each with its own figures (`Policy`):

- **per device** (`device:NONCE`): a browser carrying a device cookie for the account it
  tries (`auth.credentials.devices`). Its failures count against that browser alone, and it
  is never stopped by the two counters below, so a patron on their own device gets in while
  an attacker elsewhere is blocked for their account.
- **per account** (`account:ID`; an unknown login name counts as `name:CANONICAL`, so an
  unknown name is throttled exactly like a real one and the answer never tells them apart):
  attempts without a trusted device. Five free failures, then a block of 30 s that doubles,
  up to five minutes: short, because it is the one an attacker can inflict on a patron.
- **per address** (`addr:IP`, IPv6 per /64): attempts without a trusted device, across every
  name, against password spraying. A reading room, a school or a town's Wi-Fi puts hundreds
  of patrons behind one address, so this counter is far higher than the account's, and it
  decays instead of counting consecutive failures: each failure adds one to a score that
  halves every ten minutes. Above 100, each failure blocks the address for one second per
  point over, at most a minute.

A block is temporary and answered 429 with Retry-After; while it lasts even the right
password is refused (no hashing is spent either). A success clears the account's and the
device's counters. Password reset is never blocked.

The figures are pure functions of the counts (`Doubling.block_for`, `Decaying.block_for`),
tested on their own.
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
class Doubling:
    """Blocks after `free` consecutive failures, doubling from `first` up to `longest`."""

    free: int
    first: float
    longest: float

    def block_for(self, failures: int) -> float:
        """Seconds to block after `failures` consecutive failures (0: no block)."""
        if failures < self.free:
            return 0.0
        exponent = min(failures - self.free, 32)
        return min(self.first * math.pow(2, exponent), self.longest)


@dataclass(frozen=True)
class Decaying:
    """A score that gains one per failure and halves every `half_life` seconds; above
    `free`, each failure blocks for `per_point` seconds per point over, up to `longest`."""

    free: float
    half_life: float
    per_point: float
    longest: float

    def block_for(self, score: float) -> float:
        if score <= self.free:
            return 0.0
        return min(self.per_point * (score - self.free), self.longest)


@dataclass(frozen=True)
class Policy:
    account: Doubling = Doubling(free=5, first=30.0, longest=300.0)
    device: Doubling = Doubling(free=10, first=30.0, longest=900.0)
    address: Decaying = Decaying(free=100.0, half_life=600.0, per_point=1.0, longest=60.0)
    forget_after: float = 86400.0  # a counter idle this long starts again from zero


@dataclass(frozen=True)
class Blocked:
    """The blocks one failure started, in seconds per counter (0: none); false when it
    started none. The audit trail records a block as it starts (`login_blocked`)."""

    account: float = 0.0
    address: float = 0.0
    device: float = 0.0

    def __bool__(self) -> bool:
        return bool(self.account or self.address or self.device)


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


_COUNT = (
    "INSERT INTO login_throttle AS t (key, failures, score) VALUES ($1, 1, 1)"
    " ON CONFLICT (key) DO UPDATE SET"
    "   failures = CASE WHEN t.last_failure_at < now() - make_interval(secs => $2)"
    "              THEN 1 ELSE t.failures + 1 END,"
    "   score = t.score * power(0.5, EXTRACT(EPOCH FROM now() - t.last_failure_at) / $3) + 1,"
    "   last_failure_at = now()"
)
_COUNT_FAILURE = _COUNT + " RETURNING failures, score"
# The same count, unless the key is blocked (then no row comes back): the row's lock makes
# simultaneous tries take their turns, and each sees the block the one before it started.
_RESERVE = _COUNT + " WHERE t.blocked_until IS NULL OR t.blocked_until <= now() RETURNING failures"
_BLOCK = (
    "UPDATE login_throttle SET blocked_until = now() + make_interval(secs => $2) WHERE key = $1"
)


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

    async def failed(self, account: str, address: str) -> Blocked:
        """Count a failure without a trusted device: against the account and the address.
        The blocks it started."""
        policy = self.policy
        async with self._pool.acquire() as conn, conn.transaction():
            failures, _ = await self._count(conn, account)
            account_block = policy.account.block_for(failures)
            await self._block(conn, account, account_block)
            _, score = await self._count(conn, address)
            address_block = policy.address.block_for(score)
            await self._block(conn, address, address_block)
        return Blocked(account=account_block, address=address_block)

    async def reserve(self, account: str) -> Blocked | None:
        """Count a try as a failure of `account` before it is judged; None (nothing counted)
        while `account` is blocked. For checks quick enough that many tries sent at once
        would all be judged before the first failure was counted (a staff member's second
        factor): a right answer clears the count with `succeeded`, a wrong one is counted
        against the address alone (`failed_from`). The block it started."""
        async with self._pool.acquire() as conn, conn.transaction():
            failures = await conn.fetchval(
                _RESERVE, account, self.policy.forget_after, self.policy.address.half_life
            )
            if failures is None:
                return None
            block = self.policy.account.block_for(int(failures))
            await self._block(conn, account, block)
        return Blocked(account=block)

    async def failed_from(self, address: str) -> Blocked:
        """Count a failure against the address alone (its try was `reserve`d). The block it
        started."""
        async with self._pool.acquire() as conn, conn.transaction():
            _, score = await self._count(conn, address)
            block = self.policy.address.block_for(score)
            await self._block(conn, address, block)
        return Blocked(address=block)

    async def failed_on_device(self, device: str) -> Blocked:
        """Count a failure from a trusted device: against that device alone. The block it
        started."""
        async with self._pool.acquire() as conn, conn.transaction():
            failures, _ = await self._count(conn, device)
            device_block = self.policy.device.block_for(failures)
            await self._block(conn, device, device_block)
        return Blocked(device=device_block)

    async def _count(self, conn: asyncpg.Connection, key: str) -> tuple[int, float]:
        row = await conn.fetchrow(
            _COUNT_FAILURE, key, self.policy.forget_after, self.policy.address.half_life
        )
        assert row is not None
        return int(row["failures"]), float(row["score"])

    @staticmethod
    async def _block(conn: asyncpg.Connection, key: str, seconds: float) -> None:
        if seconds:
            await conn.execute(_BLOCK, key, seconds)

    async def succeeded(self, *keys: str, conn: Any = None) -> None:
        executor = conn if conn is not None else self._pool
        await executor.execute("DELETE FROM login_throttle WHERE key = ANY($1::text[])", list(keys))

    async def purge(self) -> int:
        status = await self._pool.execute(
            "DELETE FROM login_throttle WHERE last_failure_at < now() - make_interval(secs => $1)"
            " AND (blocked_until IS NULL OR blocked_until < now())",
            self.policy.forget_after,
        )
        return int(status.split()[-1])
