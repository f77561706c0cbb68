"""The helpdesk's reads across a patron's tables, and the row lock its actions take.

What the helpdesk sees of a patron lives in many tables: the account, its passes, the login
throttle, the outbox, the mailed links. Their own repositories write them; this one reads
them the way the helpdesk looks at them (`auth.helpdesk`), and never reads what the helpdesk
must not see: a password hash (only whether there is one), a link's token hash, a mail's
subject or bodies.
"""

from __future__ import annotations

from typing import Any

import asyncpg

_ACCOUNT = (
    "SELECT id::text AS id, username, email, pass_number, disabled,"
    " password_hash IS NULL AS not_activated, merged_into::text AS merged_into, created_at"
    " FROM accounts WHERE id = $1::uuid"
)


class HelpdeskStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def find(
        self, *, account_id: str | None, name: str, email: str, limit: int
    ) -> list[asyncpg.Record]:
        """Accounts matching exactly: `account_id`, or `name` (canonical) as a username or a
        pass number of any institution (ended ones and an account's first pass included, so
        an old card still leads somewhere), or `email` (canonical). Best match first (id,
        pass number, username, e-mail), a merged-away record after the live accounts, then by
        username and id; with the keys it matched."""
        return list(
            await self._pool.fetch(
                "WITH hits (account_id, rank, key) AS ("
                "   SELECT id, 0, 'account_id' FROM accounts WHERE id = $1::uuid"
                "   UNION ALL SELECT account_id, 1, 'pass_number' FROM memberships"
                "     WHERE pass_number_canonical = $2"
                "   UNION ALL SELECT id, 1, 'pass_number' FROM accounts"
                "     WHERE pass_number_canonical = $2"
                "   UNION ALL SELECT id, 2, 'username' FROM accounts WHERE username_canonical = $2"
                "   UNION ALL SELECT id, 3, 'email' FROM accounts WHERE email_canonical = $3)"
                " SELECT a.id::text AS id, a.username, a.email, a.disabled,"
                " a.password_hash IS NULL AS not_activated, a.merged_into::text AS merged_into,"
                " min(h.rank) AS rank, array_agg(DISTINCT h.key) AS keys"
                " FROM hits h JOIN accounts a ON a.id = h.account_id"
                " GROUP BY a.id ORDER BY rank, a.merged_into IS NOT NULL, a.username_canonical,"
                " a.id LIMIT $4",
                account_id,
                name,
                email,
                limit,
            )
        )

    async def account(self, account_id: str) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._pool.fetchrow(_ACCOUNT, account_id)
        return row

    async def lock(self, conn: Any, account_id: str) -> asyncpg.Record | None:
        """The account, locked until the caller's transaction ends, so what an action checks
        (not yet activated, not disabled) still holds when it commits."""
        row: asyncpg.Record | None = await conn.fetchrow(_ACCOUNT + " FOR UPDATE", account_id)
        return row

    async def ended_passes(self, account_id: str, limit: int) -> list[asyncpg.Record]:
        return list(
            await self._pool.fetch(
                "SELECT institution, pass_number, type, ended_at FROM memberships"
                " WHERE account_id = $1::uuid AND ended_at IS NOT NULL"
                " ORDER BY ended_at DESC, id DESC LIMIT $2",
                account_id,
                limit,
            )
        )

    async def throttle(self, key: str, *, conn: Any = None) -> asyncpg.Record | None:
        """The login throttle's counter for `key` (`auth.credentials.throttle.account_key`);
        `blocked` is decided by the database's clock, the one that set `blocked_until`."""
        executor = conn if conn is not None else self._pool
        row: asyncpg.Record | None = await executor.fetchrow(
            "SELECT failures, last_failure_at, blocked_until,"
            " coalesce(blocked_until > now(), false) AS blocked"
            " FROM login_throttle WHERE key = $1",
            key,
        )
        return row

    async def mails(self, account_id: str, limit: int) -> list[asyncpg.Record]:
        """The newest mails about the account (the outbox keeps a week): envelope and
        delivery state only."""
        return list(
            await self._pool.fetch(
                "SELECT kind, recipient, created_at, attempts, sent_at, last_error,"
                " next_attempt_at FROM outbox WHERE account_id = $1::uuid"
                " ORDER BY created_at DESC, id DESC LIMIT $2",
                account_id,
                limit,
            )
        )

    async def live_links(self, account_id: str) -> list[asyncpg.Record]:
        """The account's mailed links that still work: what they are for and until when."""
        return list(
            await self._pool.fetch(
                "SELECT purpose, created_at, expires_at FROM account_tokens"
                " WHERE account_id = $1::uuid AND used_at IS NULL AND expires_at > now()"
                " ORDER BY created_at DESC",
                account_id,
            )
        )
