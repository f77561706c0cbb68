"""Server-side session records: what makes a stolen or old cookie revocable.

The cookie is stateless for speed, but each login also writes one row in `sessions`. The proxy
checks a session id against a short in-process cache and goes to PostgreSQL only on a miss, so
the database is not on the path of every request. Revocations (logout, password change or
reset) and account changes (username) are pushed to every gateway instance with
LISTEN/NOTIFY; each instance drops its cached entries at once. Entries are looked up again
after `ttl` seconds, and all of them once the listening connection is back after a loss, so a
missed notification cannot keep a dead session alive for long.

While the database cannot be asked (`auth.store.availability`), a session this instance
confirmed live within the last `grace` seconds keeps being served from its cached entry, so
patrons at work are not thrown out by an outage; one it knows ended stays refused (an entry
is dropped, never kept, when its revocation is heard), and any other raises
`DatabaseUnavailable` (the proxy's 503): it is never taken for "logged out", which would send
the patron to a login that cannot work either.

The patron's own list of sessions (`live_sessions`) shows the browser each one started in and
when it was last used. That time is noted in memory (`seen`, on the proxy's path, no I/O) at
most once a minute a session, and written for all noted sessions in one UPDATE every
`ACTIVITY_EVERY` seconds (`record_activity`), never a query per request.

A connection that outlives its handshake (a proxied WebSocket) is held under its session
(`hold`, `auth.sessions.held`) and ended with it by the same revocations and forgettings.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import hashlib
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from auth.identity import Identity
from auth.oidc.logout import sessions_ended
from auth.sessions.held import HeldConnections
from auth.sessions.lifetimes import REFRESH_EVERY
from auth.store.availability import DatabaseUnavailable, unavailable
from auth.store.memberships import MEMBERSHIPS_OF_A, memberships_from_json
from auth.telemetry import SESSIONS_IN_GRACE, SESSIONS_REVOKED

log = logging.getLogger("auth.sessions")

CHANNEL = "library_gateway_sessions"
MAX_USER_AGENT = 512
ACTIVITY_EVERY = 60.0
PUSHED_MAX_AGE = 900.0
"""Seconds a session record is trusted while every change to it is pushed to this instance
(the LISTEN connection up): revocation is pushed, not polled, and this re-read is only the
safety net. Without the connection, `ttl` (30 s) applies."""
"""Seconds between two writes of the sessions' noted activity."""


class Unknown(enum.Enum):
    UNKNOWN = "unknown"


UNKNOWN = Unknown.UNKNOWN


@dataclass(frozen=True, slots=True)
class LiveSession:
    """One of a patron's sessions as their list shows it. `handle` (the hex SHA-256 of the
    session id) names it in a form; it is not the cookie and logs nobody in."""

    handle: str
    created_at: datetime
    last_seen_at: datetime
    user_agent: str | None
    clients: tuple[str, ...]  # the connected libraries it signed in to, first one first


@functools.lru_cache(maxsize=20_000)  # a miss costs a SHA-256 of 43 bytes: no need for more
def sid_hash(sid: str) -> bytes:
    # Memoised: the proxy looks the session up by this hash on every request.
    return hashlib.sha256(sid.encode("ascii", "replace")).digest()


class SessionRegistry:
    """`ttl`: seconds a session record read from the database is trusted without asking
    again; `grace`: seconds after it was last read that it is still trusted while the database
    cannot be asked (0: not at all)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        ttl: float = 30.0,
        grace: float = 0.0,
        max_entries: int = 100_000,
    ):
        self._pool = pool
        self._ttl = ttl
        self._grace = grace
        self._max = max_entries
        # Session hash -> (identity, or None when over; when the database said so).
        self._cache: OrderedDict[bytes, tuple[Identity | None, float]] = OrderedDict()
        # Entries read before this moment are looked up again before use (`forget_all`).
        self._fresh_from = -math.inf
        # Whether the LISTEN connection is up: while it is, every revocation and account
        # change reaches this instance, so an entry read since it came up is trusted for
        # PUSHED_MAX_AGE instead of `ttl` (`listening_up`, `listening_lost`).
        self._listening = False
        self._notified = 0
        self._notify_event = asyncio.Condition()
        # Counts every forgetting; a lookup whose query was in flight when one happened does
        # not cache its answer, which may have been read just before the revocation committed.
        self._forgotten = 0
        # Activity noted since the last write: hex session hash -> Unix time, oldest first.
        self._seen: dict[str, float] = {}
        # Connections held open under a session (WebSockets), ended with it.
        self._held = HeldConnections(self._live_among)

    async def create(
        self, account_id: str, lifetime: float, *, user_agent: str | None = None
    ) -> str:
        sid = secrets.token_urlsafe(32)
        await self._pool.execute(
            "INSERT INTO sessions (sid_hash, account_id, expires_at, user_agent, last_seen_at)"
            " VALUES ($1, $2, now() + make_interval(secs => $3), $4, now())",
            sid_hash(sid),
            account_id,
            lifetime,
            user_agent[:MAX_USER_AGENT] if user_agent else None,
        )
        return sid

    def cached(self, sid: str) -> Identity | Unknown | None:
        """The session's identity from the in-process cache, without waiting: None when it
        is known to be over, UNKNOWN when only `lookup` can tell."""
        cached = self._cache.get(sid_hash(sid))
        if cached is not None and self._fresh(cached[1], time.monotonic()):
            return cached[0]
        return UNKNOWN

    def _fresh(self, read_at: float, now: float) -> bool:
        if read_at < self._fresh_from:
            return False
        age = now - read_at
        return age < self._ttl or (self._listening and age < PUSHED_MAX_AGE)

    async def lookup(self, sid: str) -> Identity | None:
        """The session's identity, or None when it is over; `DatabaseUnavailable` when the
        database cannot be asked and this instance cannot vouch for the session itself."""
        key = sid_hash(sid)
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and self._fresh(cached[1], now):
            return cached[0]
        forgotten = self._forgotten
        try:
            row = await self._pool.fetchrow(
                "SELECT a.id::text AS id, a.username, a.pass_number, (" + MEMBERSHIPS_OF_A + ")"
                " AS memberships FROM sessions s JOIN accounts a ON a.id = s.account_id"
                " WHERE s.sid_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()"
                " AND NOT a.disabled",
                key,
            )
        except Exception as exc:
            if not unavailable(exc):
                raise
            return self._vouched(key, exc)
        identity = None
        if row is not None:
            identity = Identity(
                row["id"],
                row["username"],
                row["pass_number"],
                key.hex(),
                memberships_from_json(row["memberships"]),
            )
        if self._forgotten == forgotten:
            self._remember(key, identity, now)
        return identity

    def _vouched(self, key: bytes, exc: Exception) -> Identity | None:
        """What this instance knows of a session the database cannot be asked about: the
        entry as last read (looked up afresh, a revocation may have been heard meanwhile),
        if it says the session is over, or was read live within `grace` seconds."""
        entry = self._cache.get(key)
        if entry is not None:
            identity, read_at = entry
            if identity is None:
                return None
            if time.monotonic() - read_at < self._grace:
                SESSIONS_IN_GRACE.inc()
                return identity
        raise DatabaseUnavailable("the session record cannot be read") from exc

    def _remember(self, key: bytes, identity: Identity | None, now: float) -> None:
        self._cache[key] = (identity, now)
        self._cache.move_to_end(key)
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)

    def hold(self, identity: Identity, end: Callable[[], None]) -> Callable[[], None]:
        """Call `end` once the session of `identity` is over, whichever instance hears of it
        first: for a connection that acts under the session for longer than a request (a
        WebSocket). The returned function forgets it, for when the connection closes.
        `identity` was just found live; if that answer is no longer the cache's (a revocation
        was heard since, or it was never cached), the session is looked up again."""
        release = self._held.hold(identity.session, identity.user_id, end)
        entry = self._cache.get(bytes.fromhex(identity.session))
        if (
            entry is None
            or entry[0] is None
            or entry[0].user_id != identity.user_id
            or not self._fresh(entry[1], time.monotonic())
        ):
            self._held.check(identity.session)
        return release

    @property
    def held(self) -> int:
        """How many connections are held open under a session on this instance."""
        return len(self._held)

    async def _live_among(self, sessions: list[str]) -> dict[str, str]:
        """Of these sessions (hex hashes), those that are live, with their account ids; what
        `lookup` asks of one, in one query for all."""
        rows = await self._pool.fetch(
            "SELECT encode(s.sid_hash, 'hex') AS session, s.account_id::text AS account"
            " FROM sessions s JOIN accounts a ON a.id = s.account_id"
            " WHERE s.sid_hash = ANY($1::bytea[]) AND s.revoked_at IS NULL"
            " AND s.expires_at > now() AND NOT a.disabled",
            [bytes.fromhex(session) for session in sessions],
        )
        return {row["session"]: row["account"] for row in rows}

    async def revoke(self, sid: str, *, conn: Any = None) -> bool:
        return await self.revoke_hashed(sid_hash(sid), conn=conn)

    async def revoke_hashed(
        self, key: bytes, *, account_id: str | None = None, conn: Any = None
    ) -> bool:
        """End one session by its hash (only if it is `account_id`'s, when given): on every
        instance, and at every connected library it signed in to; in the caller's
        transaction when `conn` is given (the audit row of it with it). Whether it was live."""
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(self._pool.acquire())
                await stack.enter_async_context(conn.transaction())
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
        self._held.end(row["session"] for row in rows)
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
        self._held.end((key.hex(),))

    def forget_account(self, account_id: str) -> None:
        self._forgotten += 1
        stale = [
            key
            for key, (identity, _) in self._cache.items()
            if identity is not None and identity.user_id == account_id
        ]
        for key in stale:
            del self._cache[key]
        self._held.check_account(account_id)

    def listening_up(self) -> None:
        """The LISTEN connection is (again) up: what was read before may have missed a
        notification and is looked up again; what is read from now on hears of every change."""
        self.forget_all()
        self._listening = True

    def listening_lost(self) -> None:
        """The LISTEN connection is gone (or a try to get it back failed): entries are trusted
        for `ttl` only until it is back, and the sessions of held connections, which are not
        looked up by requests, are looked up at each try."""
        self._listening = False
        self._held.check_all()

    def forget_all(self) -> None:
        """Notifications may have been missed (the listening connection was lost and is back):
        every entry is looked up again before it is used. The entries stay, for `grace` while
        the database cannot be asked; a revocation heard before dropped its entry already.
        The sessions of held connections are looked up again too, and only the connections of
        those found over end: a database restart must not close every patron's sockets."""
        self._forgotten += 1
        self._fresh_from = time.monotonic()
        self._held.check_all()

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

    def seen(self, session: str) -> None:
        """Note that the session (its hex hash) is in use now; written by the next
        `flush_activity`. Costs a dict update: the proxy calls it, at most once a minute a
        session. Past `max_entries` sessions the oldest noted is dropped."""
        self._seen.pop(session, None)
        self._seen[session] = time.time()
        if len(self._seen) > self._max:
            del self._seen[next(iter(self._seen))]

    async def flush_activity(self) -> int:
        """Write the noted activity in one statement; how many sessions it was noted for.
        What could not be written is kept for the next try."""
        noted, self._seen = self._seen, {}
        if not noted:
            return 0
        try:
            await self._pool.execute(
                "UPDATE sessions s SET last_seen_at = greatest(s.last_seen_at, to_timestamp(n.at))"
                " FROM unnest($1::text[], $2::float8[]) AS n(session, at)"
                " WHERE s.sid_hash = decode(n.session, 'hex') AND s.revoked_at IS NULL",
                list(noted),
                list(noted.values()),
            )
        except BaseException:
            for session, at in noted.items():
                self._seen.setdefault(session, at)  # a newer note taken meanwhile wins
            while len(self._seen) > self._max:
                del self._seen[next(iter(self._seen))]
            raise
        return len(noted)

    async def record_activity(self, every: float = ACTIVITY_EVERY) -> None:
        """Write the noted activity every `every` seconds, and once more when cancelled (the
        gateway stopping), so a clean shutdown loses none of it."""
        try:
            while True:
                await asyncio.sleep(every)
                await self._flush_logged()
                self.recheck_held()
        finally:
            await self._flush_logged()

    def recheck_held(self) -> None:
        """Look the sessions of held connections up again, so those whose lifetime ran out end
        too: a revocation is pushed to every instance, the end of a session's lifetime is not.
        Run with the activity's writes (once a minute): one query for all, none when nothing
        is held."""
        if len(self._held):
            self._held.check_all()

    async def _flush_logged(self) -> None:
        try:
            await self.flush_activity()
        except Exception:
            log.exception("recording the sessions' activity failed")

    async def live_sessions(self, account_id: str, *, idle: float) -> list[LiveSession]:
        """The account's sessions that are not over, most recently used first. `idle` is the
        idle timeout: a session unused for longer is over, though its record only knows its
        activity to within two writes of it."""
        rows = await self._pool.fetch(
            "SELECT encode(s.sid_hash, 'hex') AS handle, s.created_at, s.user_agent,"
            " coalesce(s.last_seen_at, s.created_at) AS last_seen_at,"
            " coalesce(array_agg(c.client_id ORDER BY c.first_at, c.client_id)"
            "   FILTER (WHERE c.client_id IS NOT NULL), '{}') AS clients"
            " FROM sessions s LEFT JOIN oidc_session_clients c"
            "   ON c.session = encode(s.sid_hash, 'hex')"
            " WHERE s.account_id = $1 AND s.revoked_at IS NULL AND s.expires_at > now()"
            " AND coalesce(s.last_seen_at, s.created_at) > now() - make_interval(secs => $2)"
            " GROUP BY s.sid_hash"
            " ORDER BY coalesce(s.last_seen_at, s.created_at) DESC, s.created_at DESC",
            account_id,
            idle + 2 * ACTIVITY_EVERY + REFRESH_EVERY,
        )
        return [
            LiveSession(
                handle=row["handle"],
                created_at=row["created_at"],
                last_seen_at=row["last_seen_at"],
                user_agent=row["user_agent"],
                clients=tuple(row["clients"]),
            )
            for row in rows
        ]

    async def purge_expired(self) -> int:
        status = await self._pool.execute(
            "DELETE FROM sessions WHERE expires_at < now() - interval '1 day'"
        )
        return int(status.split()[-1])
