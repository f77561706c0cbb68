"""Telling the connected libraries that a patron logged out (OpenID Back-Channel Logout 1.0).

Ending a gateway session queues one `backchannel_logouts` row for each library it signed in
to (`auth.oidc.logout`, in the transaction that ends it). `BackchannelWorker` posts a freshly
signed logout token to each library's `backchannel_logout_uri`, with back-off, until the
library answers 2xx or the row is older than the give-up time.

Unlike the mail outbox it never holds a transaction while a library's server answers (or
does not): due rows are claimed in one short statement that leases them (`next_attempt_at`
pushed past the attempt's timeout), posted concurrently, each with its own timeout, and each
outcome is written in a statement of its own. A worker that dies mid-delivery leaves its
leases to run out, and the rows are claimed again, here or on another instance; so a library
may now and then be told twice, which a logout allows (each token has its own `jti`). A row
whose client is gone from clients.yaml, or has no `backchannel_logout_uri`, is closed
(`given_up_at`, with the reason) without a request: `delivered_at` always means the library
answered.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
import asyncpg

from auth.oidc.clients import ClientSource
from auth.oidc.tokens import OidcSigner
from auth.signing import SigningUnavailable
from auth.telemetry import BACKCHANNEL_LOGOUTS

log = logging.getLogger("auth.oidc.backchannel")

RETRY_DELAYS: tuple[float, ...] = (5, 15, 60, 300, 900, 3600)
ATTEMPT_TIMEOUT = 10.0
PER_CLIENT = 4  # deliveries under way to one library at once, so a hung one blocks no other
KEEP_FOR = 7 * 86400.0
NO_URI = "no back-channel logout URI"
UNKNOWN_CLIENT = "client no longer registered"
_DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True)
class BackchannelTiming:
    """How the worker retries: the pause after each failed attempt (the last one repeats),
    each attempt's timeout, and how long a row may be retried at all."""

    retry_delays: Sequence[float] = RETRY_DELAYS
    timeout: float = ATTEMPT_TIMEOUT
    give_up_after: float = 86400.0

    def __post_init__(self) -> None:
        if not self.retry_delays or self.timeout <= 0:
            raise ValueError("retry delays and a positive timeout are needed")

    @property
    def lease(self) -> float:
        """How long a claimed row is left alone: past the attempt's timeout, with room for
        signing it and writing its outcome."""
        return self.timeout + 10.0


@dataclass(frozen=True)
class Due:
    """A claimed row: who to tell about which session, and how often that failed before."""

    id: int
    client_id: str
    session: str
    sub: str
    attempts: int

    @property
    def sid(self) -> str:
        # The `sid` the client's ID tokens carried (auth.oidc.token: the session's first half).
        return self.session[:32]


def retry_delay(failed_attempts: int, delays: Sequence[float]) -> float:
    """Seconds until the next try after the `failed_attempts`-th failure (1 or more): each
    pause in turn, then the last one again."""
    return float(delays[min(max(failed_attempts, 1), len(delays)) - 1])


class BackchannelQueue:
    """The SQL of `backchannel_logouts` (rows are added by `auth.oidc.logout`)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def claim(
        self,
        limit: int,
        lease: float,
        *,
        per_client: int | None = None,
        busy: Sequence[str] = (),
    ) -> list[Due]:
        """Lease up to `limit` due rows, oldest first, at most `per_client` of one client and
        none of the clients in `busy`. Rows another instance is claiming at this moment are
        skipped, not waited for."""
        rows = await self._pool.fetch(
            "WITH due AS (SELECT picked.id FROM"
            "   (SELECT DISTINCT client_id FROM backchannel_logouts"
            "     WHERE delivered_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= now()"
            "     AND client_id <> ALL($3::text[])) AS clients"
            "   CROSS JOIN LATERAL (SELECT id, next_attempt_at FROM backchannel_logouts"
            "     WHERE client_id = clients.client_id"
            "     AND delivered_at IS NULL AND given_up_at IS NULL AND next_attempt_at <= now()"
            "     ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED) AS picked"
            "   ORDER BY picked.next_attempt_at LIMIT $1)"
            " UPDATE backchannel_logouts b"
            " SET next_attempt_at = now() + make_interval(secs => $2) FROM due WHERE b.id = due.id"
            " RETURNING b.id, b.client_id, b.session, b.sub, b.attempts",
            limit,
            lease,
            list(busy),
            per_client or limit,
        )
        return [Due(**dict(row)) for row in rows]

    async def next_due_in(self, busy: Sequence[str] = ()) -> float | None:
        """Seconds until the next open row of a client not in `busy` is due (negative:
        overdue); None: there is none."""
        due: float | None = await self._pool.fetchval(
            "SELECT extract(epoch FROM min(next_attempt_at) - now())::float8"
            " FROM backchannel_logouts WHERE delivered_at IS NULL AND given_up_at IS NULL"
            " AND client_id <> ALL($1::text[])",
            list(busy),
        )
        return due

    async def delivered(self, row_id: int) -> None:
        await self._pool.execute(
            "UPDATE backchannel_logouts SET delivered_at = now(), attempts = attempts + 1,"
            " last_error = NULL WHERE id = $1 AND delivered_at IS NULL AND given_up_at IS NULL",
            row_id,
        )

    async def failed(self, row_id: int, error: str, delay: float, give_up_after: float) -> bool:
        """Record a failed attempt: tried again in `delay` seconds, or given up when the
        logout is older than `give_up_after` (by the database's clock, now). Whether it was
        given up."""
        given_up: bool | None = await self._pool.fetchval(
            "UPDATE backchannel_logouts SET attempts = attempts + 1, last_error = $2,"
            " next_attempt_at = now() + make_interval(secs => $3),"
            " given_up_at = CASE WHEN created_at <= now() - make_interval(secs => $4)"
            "   THEN now() END"
            " WHERE id = $1 AND delivered_at IS NULL AND given_up_at IS NULL"
            " RETURNING given_up_at IS NOT NULL",
            row_id,
            error,
            delay,
            give_up_after,
        )
        return bool(given_up)

    async def skip(self, row_id: int, reason: str) -> None:
        """Close a logout without a request: there is nobody to tell."""
        await self._pool.execute(
            "UPDATE backchannel_logouts SET given_up_at = now(), last_error = $2"
            " WHERE id = $1 AND delivered_at IS NULL AND given_up_at IS NULL",
            row_id,
            reason,
        )

    async def pending(self) -> int:
        return int(
            await self._pool.fetchval(
                "SELECT count(*) FROM backchannel_logouts"
                " WHERE delivered_at IS NULL AND given_up_at IS NULL"
            )
        )

    async def purge(self, older_than: float = KEEP_FOR) -> int:
        """Forget rows delivered or given up more than a week ago."""
        status = await self._pool.execute(
            "DELETE FROM backchannel_logouts"
            " WHERE delivered_at < now() - make_interval(secs => $1)"
            " OR given_up_at < now() - make_interval(secs => $1)",
            older_than,
        )
        return int(status.split()[-1])


class BackchannelWorker:
    """Delivers due logout tokens, up to `concurrency` at once and `per_client` to one
    library, so that one whose server hangs cannot hold up the others; `run` is its loop,
    `wake` the LISTEN handler that starts it early."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        clients: ClientSource,
        signer: OidcSigner,
        *,
        timing: BackchannelTiming | None = None,
        session: aiohttp.ClientSession | None = None,
        concurrency: int = 32,
        per_client: int = PER_CLIENT,
    ) -> None:
        self.queue = BackchannelQueue(pool)
        self._clients = clients
        self._signer = signer
        self._timing = timing or BackchannelTiming()
        self._session = session
        self._owns_session = session is None
        self._concurrency = concurrency
        self._per_client = per_client
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self._busy: collections.Counter[str] = collections.Counter()

    def wake(self, _payload: str = "") -> None:
        self._wake.set()

    async def run(self, poll: float = 15.0) -> None:
        # As OutboxWorker.run: a cancellation requested of this task is honoured after each
        # round whether or not an await in it swallowed it (CPython gh-86296).
        task = asyncio.current_task()
        try:
            while True:
                self._wake.clear()
                wait = poll
                try:
                    if await self._start_due():
                        # Nothing more is due now that there is room for: sleep until the
                        # next row is (a busy library's wait for a delivery to finish).
                        due = await self.queue.next_due_in(self._full())
                        wait = poll if due is None else min(poll, max(due, 0.01))
                except _DB_ERRORS as exc:
                    log.warning(
                        "back-channel worker cannot reach the database", extra={"error": str(exc)}
                    )
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
        finally:
            # Deliveries cut short keep their lease and are tried again once it runs out.
            for delivery in self._inflight:
                delivery.cancel()
            await asyncio.gather(*self._inflight, return_exceptions=True)
            await self.close()

    def _full(self) -> list[str]:
        """The libraries with as many deliveries under way as one may have."""
        return [client for client, count in self._busy.items() if count >= self._per_client]

    async def _start_due(self) -> bool:
        """Start deliveries for due rows while there is room; True when every due row there
        is room for is under way (False: the room ran out first, and a finished delivery
        wakes the loop)."""
        while (room := self._concurrency - len(self._inflight)) > 0:
            claimed = await self.queue.claim(
                room, self._timing.lease, per_client=self._per_client, busy=self._full()
            )
            for due in claimed:
                delivery = asyncio.create_task(self._attempt(due))
                self._inflight.add(delivery)
                self._busy[due.client_id] += 1
                delivery.add_done_callback(functools.partial(self._finished, due.client_id))
            if len(claimed) < room:
                return True
        return False

    def _finished(self, client_id: str, delivery: asyncio.Task[None]) -> None:
        self._inflight.discard(delivery)
        self._busy[client_id] -= 1
        if self._busy[client_id] <= 0:
            del self._busy[client_id]
        if not delivery.cancelled() and (exc := delivery.exception()) is not None:
            # Its row keeps the lease and is tried again once that runs out.
            log.error("back-channel delivery failed", exc_info=exc)
        self._wake.set()

    async def deliver_due(self, batch: int = 32) -> int:
        """Claim up to `batch` due rows and deliver them, all at once; how many were claimed."""
        claimed = await self.queue.claim(batch, self._timing.lease)
        await asyncio.gather(*(self._attempt(due) for due in claimed))
        return len(claimed)

    async def close(self) -> None:
        if self._owns_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _attempt(self, due: Due) -> None:
        client = self._clients.table.get(due.client_id)
        try:
            if client is None or not client.backchannel_logout_uri:
                reason = UNKNOWN_CLIENT if client is None else NO_URI
                await self.queue.skip(due.id, reason)
                BACKCHANNEL_LOGOUTS.labels("skipped").inc()
                return
            error = await self._post(
                client.backchannel_logout_uri,
                self._signer.logout_token(
                    client_id=client.client_id,
                    sub=due.sub,
                    sid=due.sid,
                    alg=client.id_token_signed_response_alg,
                ),
            )
            if error is None:
                await self.queue.delivered(due.id)
                BACKCHANNEL_LOGOUTS.labels("delivered").inc()
                return
        except SigningUnavailable as exc:  # a key may be usable later (keys refresh)
            error = type(exc).__name__
        except _DB_ERRORS as exc:  # the lease runs out and the row is tried again
            log.warning(
                "back-channel outcome not recorded", extra={"row": due.id, "error": str(exc)}
            )
            return
        await self._failed(due, error)

    async def _post(self, uri: str, token: str) -> str | None:
        """POST the token as Back-Channel Logout 1.0 section 2.5 says; None when the library
        took it, else what went wrong. Never a redirect: the library must answer itself."""
        if self._session is None:
            self._session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),  # nothing of one library reaches another
                headers={"User-Agent": "library-gateway back-channel logout"},
            )
        try:
            async with self._session.post(
                uri,
                data={"logout_token": token},
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._timing.timeout),
            ) as resp:
                if 200 <= resp.status < 300:
                    return None
                return f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            # The class and aiohttp's message (host and port at most): never the token.
            message = str(exc)
            return f"{type(exc).__name__}: {message}"[:500] if message else type(exc).__name__

    async def _failed(self, due: Due, error: str) -> None:
        attempt = due.attempts + 1
        delay = retry_delay(attempt, self._timing.retry_delays)
        try:
            given_up = await self.queue.failed(due.id, error, delay, self._timing.give_up_after)
        except _DB_ERRORS as exc:
            log.warning(
                "back-channel outcome not recorded", extra={"row": due.id, "error": str(exc)}
            )
            return
        # The error's class (or HTTP status) only: never the token, never the patron.
        details = {"client_id": due.client_id, "attempt": attempt, "error": error.split(":")[0]}
        if given_up:
            BACKCHANNEL_LOGOUTS.labels("given_up").inc()
            log.warning("back-channel logout given up", extra=details)
        else:
            BACKCHANNEL_LOGOUTS.labels("failed").inc()
            log.warning(
                "back-channel logout not delivered, will retry",
                extra={**details, "retry_in_s": delay},
            )
