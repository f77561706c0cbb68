"""Server-side session records: what makes a stolen or old cookie revocable.

The cookie is stateless for speed, but each login also writes one row in `sessions`. The proxy
checks a session id against a short in-process cache and goes to PostgreSQL only on a miss, so
the database is not on the path of every request. Revocations (logout, password change or
reset) and account changes (username) are pushed to every gateway instance with
LISTEN/NOTIFY; each instance drops its cached entries at once. If the listening connection is
lost the whole cache is dropped, and entries also expire after `ttl` seconds, so a missed
notification cannot keep a dead session alive for long.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import hashlib
import logging
import secrets
import time
from collections import OrderedDict
from typing import Any

import asyncpg

from auth.identity import Identity
from auth.oidc.logout import sessions_ended
from auth.telemetry import SESSIONS_REVOKED

log = logging.getLogger("auth.sessions")

CHANNEL = "library_gateway_sessions"


class Unknown(enum.Enum):
    UNKNOWN = "unknown"


UNKNOWN = Unknown.UNKNOWN


@functools.lru_cache(maxsize=20_000)  # as many as the cookie cache holds (auth.cookies)
def sid_hash(sid: str) -> bytes:
    # Memoised: the proxy looks the session up by this hash on every request.
    return hashlib.sha256(sid.encode("ascii", "replace")).digest()


class SessionRegistry:
    def __init__(self, pool: asyncpg.Pool, *, ttl: float = 30.0, max_entries: int = 100_000):
        self._pool = pool
        self._ttl = ttl
        self._max = max_entries
        self._cache: OrderedDict[bytes, tuple[Identity | None, float]] = OrderedDict()
        self._notified = 0
        self._notify_event = asyncio.Condition()
        # Counts every forgetting; a lookup whose query was in flight when one happened does
        # not cache its answer, which may have been read just before the revocation committed.
        self._forgotten = 0

    async def create(self, account_id: str, lifetime: float) -> str:
        sid = secrets.token_urlsafe(32)
        await self._pool.execute(
            "INSERT INTO sessions (sid_hash, account_id, expires_at)"
            " VALUES ($1, $2, now() + make_interval(secs => $3))",
            sid_hash(sid),
            account_id,
            lifetime,
        )
        return sid

    def cached(self, sid: str) -> Identity | Unknown | None:
        """The session's identity from the in-process cache, without waiting: None when it
        is known to be over, UNKNOWN when only `lookup` can tell."""
        cached = self._cache.get(sid_hash(sid))
        if cached is not None and time.monotonic() - cached[1] < self._ttl:
            return cached[0]
        return UNKNOWN

    async def lookup(self, sid: str) -> Identity | None:
        key = sid_hash(sid)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[1] < self._ttl:
            return cached[0]
        forgotten = self._forgotten
        row = await self._pool.fetchrow(
            "SELECT a.id::text AS id, a.username, a.pass_number FROM sessions s"
            " JOIN accounts a ON a.id = s.account_id"
            " WHERE s.sid_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()"
            " AND NOT a.disabled",
            key,
        )
        identity = None
        if row is not None:
            identity = Identity(row["id"], row["username"], row["pass_number"], key.hex())
        if self._forgotten == forgotten:
            self._remember(key, identity, now)
        return identity

    def _remember(self, key: bytes, identity: Identity | None, now: float) -> None:
        self._cache[key] = (identity, now)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)

    async def revoke(self, sid: str) -> None:
        await self.revoke_hashed(sid_hash(sid))

    async def revoke_hashed(self, key: bytes, *, account_id: str | None = None) -> bool:
        """End one session by its hash (only if it is `account_id`'s, when given): on every
        instance, and at every connected library it signed in to. Whether it was live."""
        async with self._pool.acquire() as conn, conn.transaction():
            ended = await conn.fetchval(
                "UPDATE sessions SET revoked_at = now() WHERE sid_hash = $1"
                " AND revoked_at IS NULL AND ($2::uuid IS NULL OR account_id = $2::uuid)"
                " RETURNING encode(sid_hash, 'hex')",
                key,
                account_id,
            )
            await sessions_ended(conn, [ended] if ended is not None else [])
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, "sid:" + key.hex())
        self._forget_session(key)
        if ended is not None:
            SESSIONS_REVOKED.inc()
        return ended is not None

    async def revoke_account(
        self,
        account_id: str,
        *,
        keep_sid: str | None = None,
        conn: Any = None,
        credentials: bool = True,
    ) -> int:
        """End every session of an account (but `keep_sid`, the caller's own, when given).
        `credentials`: the account's password or state changed, so its offline grants at
        connected libraries end too; False when the patron only ends their other sessions."""
        keep = sid_hash(keep_sid) if keep_sid is not None else b""
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(self._pool.acquire())
                await stack.enter_async_context(conn.transaction())
            rows = await conn.fetch(
                "UPDATE sessions SET revoked_at = now()"
                " WHERE account_id = $1 AND revoked_at IS NULL AND sid_hash <> $2"
                " RETURNING encode(sid_hash, 'hex') AS session",
                account_id,
                keep,
            )
            await sessions_ended(
                conn,
                [row["session"] for row in rows],
                account_id=account_id,
                credentials=credentials,
            )
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, "account:" + account_id)
        self.forget_account(account_id)
        SESSIONS_REVOKED.inc(len(rows))
        return len(rows)

    async def account_changed(self, account_id: str, conn: Any = None) -> None:
        """Tell every instance to re-read this account (a new username, say)."""
        executor = conn if conn is not None else self._pool
        await executor.execute("SELECT pg_notify($1, $2)", CHANNEL, "account:" + account_id)
        self.forget_account(account_id)

    def _forget_session(self, key: bytes) -> None:
        self._forgotten += 1
        self._cache.pop(key, None)

    def forget_account(self, account_id: str) -> None:
        self._forgotten += 1
        stale = [
            key
            for key, (identity, _) in self._cache.items()
            if identity is not None and identity.user_id == account_id
        ]
        for key in stale:
            del self._cache[key]

    def forget_all(self) -> None:
        self._forgotten += 1
        self._cache.clear()

    def on_notification(self, payload: str) -> None:
        kind, _, value = payload.partition(":")
        if kind == "sid":
            with contextlib.suppress(ValueError):
                self._forget_session(bytes.fromhex(value))
        elif kind == "account":
            self.forget_account(value)
        self._notified += 1
        asyncio.get_running_loop().create_task(self._wake())

    async def _wake(self) -> None:
        async with self._notify_event:
            self._notify_event.notify_all()

    async def wait_notified(self, count: int) -> None:
        """Wait until this instance has received `count` notifications (used by tests and
        the readiness of a fresh instance)."""
        async with self._notify_event:
            await self._notify_event.wait_for(lambda: self._notified >= count)

    @property
    def notified(self) -> int:
        return self._notified

    async def purge_expired(self) -> int:
        status = await self._pool.execute(
            "DELETE FROM sessions WHERE expires_at < now() - interval '1 day'"
        )
        return int(status.split()[-1])
