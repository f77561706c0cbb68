"""Recovery mail limits: how much password-reset and forgotten-username mail one client and
one patron can cause, counted in PostgreSQL so that every instance shares the count.

Both forms answer the same page whatever they find and mail whoever the identifier names, so
without limits one client could make the gateway mail hundreds of patrons who asked for
nothing (an outbox full of it, and a sender that mail providers learn to distrust), or bury
one patron's mailbox. Two limits stop that, both checked in the work done after the answer,
so the answer never depends on them:

- **per account** (`Policy.per_account`): the reset links made for one account
  (`auth.store.links.Links.issue_limited` counts them) and the forgotten-username mails to one
  mailbox (counted here, as `mailbox:CANONICAL-ADDRESS`);
- **per client address** (`Policy.per_address`), the mails of both forms together, counted
  as `addr:IP` with IPv6 per /64, the key the login throttle uses
  (`auth.credentials.throttle.address_key`).

Only mails that go out count: asking for an unknown account, or for one whose own limit is
reached, costs the address nothing, so a patron clicking "send" five times uses three of
their reading room's mails, not five.

Every mail is one row per key; a check counts the key's rows in each window, which makes the
windows sliding and exact, and the table small (no more rows than mails sent in the longest
window; the hourly housekeeping deletes older ones). A check locks its key until the caller's
transaction ends, so simultaneous requests count one another's mails instead of all seeing
the same old count. Callers take the address before the account or mailbox, always, so two
checks never wait on each other in a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from auth.store.accounts import canonical_email


@dataclass(frozen=True)
class Window:
    mails: int
    seconds: float


@dataclass(frozen=True)
class Policy:
    # A patron who does not see the mail at once asks again, once or twice (a spam folder, a
    # slow mail server, a typo in the address they asked with). A fourth mail within a
    # quarter of an hour helps nobody; more would be somebody else filling their mailbox.
    per_account: Window = Window(mails=3, seconds=15 * 60)
    # A reading room, a class visit or a campus puts dozens of patrons behind one address,
    # and a class that sets up its accounts together may legitimately ask for a few dozen
    # mails in an hour; a whole day of that is not a library's day. Beyond these one address
    # cannot have the gateway mail more than 40 patrons an hour nor 120 a day.
    per_address: tuple[Window, ...] = (
        Window(mails=40, seconds=60 * 60),
        Window(mails=120, seconds=24 * 60 * 60),
    )

    @property
    def kept_for(self) -> float:
        """How long a sent mail still counts against some limit."""
        return max(window.seconds for window in (self.per_account, *self.per_address))


def mailbox_key(email: str) -> str:
    """One mailbox, however the address is spelled (case, full-width characters)."""
    return f"mailbox:{canonical_email(email)}"


class MailLimits:
    def __init__(self, pool: asyncpg.Pool, policy: Policy | None = None) -> None:
        self._pool = pool
        self.policy = policy or Policy()

    async def address_spent(self, conn: Any, address: str) -> bool:
        """Whether the client address (an `address_key`) has had all the mails its windows
        allow. Inside the caller's transaction, which `sent` must follow."""
        return await self._spent(conn, address, self.policy.per_address)

    async def mailbox_spent(self, conn: Any, email: str) -> bool:
        """Whether this mailbox has had all the forgotten-username mails one patron needs.
        Inside the caller's transaction, which `sent` must follow."""
        return await self._spent(conn, mailbox_key(email), (self.policy.per_account,))

    async def sent(self, conn: Any, address: str, email: str | None = None) -> None:
        """Count one mail against the address and, for a forgotten-username mail, against
        the mailbox, in the transaction that queues the mail."""
        keys = [address] if email is None else [address, mailbox_key(email)]
        await conn.executemany(
            "INSERT INTO recovery_mails (key) VALUES ($1)", [(key,) for key in keys]
        )

    async def purge(self) -> int:
        status = await self._pool.execute(
            "DELETE FROM recovery_mails WHERE sent_at < now() - make_interval(secs => $1)",
            self.policy.kept_for,
        )
        return int(status.split()[-1])

    async def _spent(self, conn: Any, key: str, windows: tuple[Window, ...]) -> bool:
        # A key that is spent stays spent until its window moves on, so a flood is turned
        # away without queueing on the lock; only a key with mails left is counted again
        # under it.
        if await self._over(conn, key, windows):
            return True
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"recovery_mails:{key}"
        )
        return await self._over(conn, key, windows)

    @staticmethod
    async def _over(conn: Any, key: str, windows: tuple[Window, ...]) -> bool:
        over: bool = await conn.fetchval(
            "SELECT coalesce(bool_or(n >= w.mails), false)"
            " FROM unnest($2::int[], $3::float8[]) AS w(mails, seconds),"
            " LATERAL (SELECT count(*) AS n FROM recovery_mails"
            "          WHERE key = $1 AND sent_at > now() - make_interval(secs => w.seconds)) c",
            key,
            [window.mails for window in windows],
            [window.seconds for window in windows],
        )
        return over
