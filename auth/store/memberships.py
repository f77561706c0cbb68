"""The memberships table, and every SQL statement that touches it.

A pass number is looked up by its canonical form (NFKC + case folding, as usernames are) and
is unique within its institution. The membership an account is made with (`accounts add`,
an import) is of the default institution; which one that is comes from institutions.yaml,
which SQL cannot read, so the gateway writes it to `gateway_state` when it starts
(`settle_default`), and memberships migrated before there was a file (`default`) become that
institution's then.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import asyncpg

from auth.credentials.usernames import canonical
from auth.memberships import DEFAULT_ID, Membership

# A subquery: the live memberships of the account `a`, as JSON, oldest first.
MEMBERSHIPS_OF_A = (
    "SELECT coalesce(json_agg(json_build_array(m.institution, m.pass_number, m.type,"
    " m.valid_until) ORDER BY m.created_at, m.id), '[]') FROM memberships m"
    " WHERE m.account_id = a.id AND m.ended_at IS NULL"
)
# The default institution's id as the gateway last said it (or `default`).
DEFAULT_INSTITUTION = (
    "coalesce((SELECT value FROM gateway_state WHERE name = 'default_institution'),"
    f" '{DEFAULT_ID}')"
)


def memberships_from_json(value: str | None) -> tuple[Membership, ...]:
    found = []
    for institution, pass_number, kind, until in json.loads(value or "[]"):
        found.append(
            Membership(institution, pass_number, kind, date.fromisoformat(until) if until else None)
        )
    return tuple(found)


class MembershipTaken(Exception):
    """The institution has this pass number already (on this account or another)."""


class Memberships:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def of(self, account_id: str) -> tuple[Membership, ...]:
        value = await self._pool.fetchval(
            f"SELECT ({MEMBERSHIPS_OF_A}) FROM accounts a WHERE a.id = $1::uuid", account_id
        )
        return memberships_from_json(value)

    async def add(
        self,
        account_id: str,
        membership: Membership,
        *,
        conn: Any = None,
    ) -> None:
        """Give the account this membership; `MembershipTaken` when the institution has the
        pass number already."""
        executor = conn if conn is not None else self._pool
        try:
            await executor.execute(
                "INSERT INTO memberships (account_id, institution, pass_number,"
                " pass_number_canonical, type, valid_until) VALUES ($1::uuid, $2, $3, $4, $5, $6)",
                account_id,
                membership.institution,
                membership.pass_number,
                canonical(membership.pass_number),
                membership.type,
                membership.valid_until,
            )
        except asyncpg.UniqueViolationError as exc:
            raise MembershipTaken(membership.pass_number) from exc

    async def end(self, institution: str, pass_number: str, *, conn: Any = None) -> str | None:
        """End a membership; the account it was of, or None when there was none live."""
        executor = conn if conn is not None else self._pool
        value = await executor.fetchval(
            "UPDATE memberships SET ended_at = now() WHERE institution = $1"
            " AND pass_number_canonical = $2 AND ended_at IS NULL RETURNING account_id::text",
            institution,
            canonical(pass_number),
        )
        return str(value) if value is not None else None

    async def change(
        self, institution: str, pass_number: str, *, type: str | None, valid_until: date | None
    ) -> str | None:
        """Set a live membership's type and last valid day (a renewal, a lapse); the account
        it is of, or None when there is none live. Its holder's sessions read it anew only
        after `SessionRegistry.account_changed`."""
        value = await self._pool.fetchval(
            "UPDATE memberships SET type = $3, valid_until = $4 WHERE institution = $1"
            " AND pass_number_canonical = $2 AND ended_at IS NULL RETURNING account_id::text",
            institution,
            canonical(pass_number),
            type,
            valid_until,
        )
        return str(value) if value is not None else None

    async def holder(self, institution: str, pass_number: str) -> str | None:
        """The account holding this live pass of the institution (not a merged-away one)."""
        value = await self._pool.fetchval(
            "SELECT m.account_id::text FROM memberships m JOIN accounts a ON a.id = m.account_id"
            " WHERE m.institution = $1 AND m.pass_number_canonical = $2 AND m.ended_at IS NULL"
            " AND a.merged_into IS NULL",
            institution,
            canonical(pass_number),
        )
        return str(value) if value is not None else None

    async def default_id(self) -> str:
        """The default institution's id as the gateway last settled it (or `default`)."""
        value: str = await self._pool.fetchval(f"SELECT {DEFAULT_INSTITUTION}")
        return value

    async def settle_default(self, institution_id: str) -> int:
        """Record the default institution for SQL, and give it the memberships migrated
        before it was named (`default`). Returns how many moved."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO gateway_state (name, value) VALUES ('default_institution', $1)"
                " ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                institution_id,
            )
            if institution_id == DEFAULT_ID:
                return 0
            status = await conn.execute(
                "UPDATE memberships m SET institution = $1 WHERE m.institution = $2"
                " AND NOT EXISTS (SELECT 1 FROM memberships o WHERE o.institution = $1"
                " AND o.pass_number_canonical = m.pass_number_canonical)",
                institution_id,
                DEFAULT_ID,
            )
            return int(status.split()[-1])
