"""Single-use links by mail (password reset, activation): made, checked and spent.

A token is 256 bits from the CSPRNG; the database keeps only its SHA-256, so a copy of the
database does not hold working links. Spending is one conditional UPDATE, so two concurrent
uses of the same link cannot both succeed. Whatever touches several links of one account
(spending one voids its siblings, voiding all, counting before issuing) first locks the
account's row (`_lock`), as every change of an account does (a new password, a block, a new
address, a merge): changes of one account take turns instead of locking each other's rows in
opposite orders (a deadlock, and a server error for one of the patrons).
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Any, Literal

import asyncpg

Purpose = Literal["reset", "activate"]
MAX_TOKEN_LENGTH = 128


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def plausible(token: str) -> bool:
    return 20 <= len(token) <= MAX_TOKEN_LENGTH and token.isascii()


class Links:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def issue(
        self, account_id: str, purpose: Purpose, ttl: float, *, conn: Any = None
    ) -> str:
        token = secrets.token_urlsafe(32)
        executor = conn if conn is not None else self._pool
        await executor.execute(
            "INSERT INTO account_tokens (token_hash, account_id, purpose, expires_at)"
            " VALUES ($1, $2::uuid, $3, now() + make_interval(secs => $4))",
            token_hash(token),
            account_id,
            purpose,
            ttl,
        )
        return token

    async def issue_limited(
        self,
        conn: Any,
        account_id: str,
        purpose: Purpose,
        ttl: float,
        *,
        limit: int,
        within: float,
    ) -> str | None:
        """`issue` inside the caller's transaction, unless `limit` links of this kind were
        made for the account in the last `within` seconds (then None). The account's lock,
        held until the transaction ends, makes simultaneous callers count one another's links
        instead of all seeing the same old count."""
        await _lock(conn, account_id)
        count = await conn.fetchval(
            "SELECT count(*) FROM account_tokens WHERE account_id = $1::uuid AND purpose = $2"
            " AND created_at > now() - make_interval(secs => $3)",
            account_id,
            purpose,
            within,
        )
        if int(count) >= limit:
            return None
        return await self.issue(account_id, purpose, ttl, conn=conn)

    async def peek(self, token: str, purpose: Purpose) -> str | None:
        """The account a live token belongs to, without spending it (GET shows a form)."""
        if not plausible(token):
            return None
        value = await self._pool.fetchval(
            "SELECT account_id::text FROM account_tokens WHERE token_hash = $1 AND purpose = $2"
            " AND used_at IS NULL AND expires_at > now()",
            token_hash(token),
            purpose,
        )
        return str(value) if value is not None else None

    async def void_all(self, conn: Any, account_id: str) -> None:
        """Every live link of the account stops working (the account was blocked, its
        address or its password changed)."""
        await _lock(conn, account_id)
        await conn.execute(
            "UPDATE account_tokens SET used_at = now() WHERE account_id = $1::uuid"
            " AND used_at IS NULL",
            account_id,
        )

    async def spend(self, conn: Any, token: str, purpose: Purpose) -> str | None:
        """Use the token up inside the caller's transaction; None if it was not live."""
        if not plausible(token):
            return None
        owner = await conn.fetchval(
            "SELECT account_id::text FROM account_tokens WHERE token_hash = $1 AND purpose = $2",
            token_hash(token),
            purpose,
        )
        if owner is None:
            return None
        await _lock(conn, str(owner))
        value = await conn.fetchval(
            "UPDATE account_tokens SET used_at = now() WHERE token_hash = $1 AND purpose = $2"
            " AND used_at IS NULL AND expires_at > now() RETURNING account_id::text",
            token_hash(token),
            purpose,
        )
        if value is None:
            return None
        # One link used: the others of its kind for that account are void too.
        await conn.execute(
            "UPDATE account_tokens SET used_at = now() WHERE account_id = $1::uuid"
            " AND purpose = $2 AND used_at IS NULL",
            value,
            purpose,
        )
        return str(value)


async def _lock(conn: Any, account_id: str) -> None:
    """Lock the account's row until the caller's transaction ends: before its links, in the
    order every change of an account takes the two. The lock an UPDATE of the row takes, so
    it waits for such changes, and they for it."""
    await conn.execute("SELECT 1 FROM accounts WHERE id = $1::uuid FOR NO KEY UPDATE", account_id)
