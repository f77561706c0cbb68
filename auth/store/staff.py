"""The staff members (`staff_members`, migration 0011) and their activation links
(`staff_tokens`): every SQL statement that touches them.

Addresses are looked up by their canonical form. Activation tokens are 256 bits from the
CSPRNG; only their SHA-256 is kept, and spending one is a single conditional UPDATE, so two
uses of the same link cannot both succeed (as `auth.store.links` does for patrons).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any, cast

import asyncpg

from auth.staff.model import EmailTaken, Role, StaffMember, canonical_email
from auth.store.links import plausible, token_hash

_COLUMNS = "id::text AS id, email, role, password_hash, disabled, activated_at, created_at"


def _member(row: asyncpg.Record | None) -> StaffMember | None:
    if row is None:
        return None
    return StaffMember(
        id=row["id"],
        email=row["email"],
        role=cast(Role, row["role"]),
        password_hash=row["password_hash"],
        disabled=row["disabled"],
        activated_at=row["activated_at"],
        created_at=row["created_at"],
    )


class StaffMembers:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        async with self._pool.acquire() as conn, conn.transaction():
            yield conn

    async def add(self, email: str, role: Role, *, conn: Any = None) -> StaffMember:
        executor = conn if conn is not None else self._pool
        try:
            row = await executor.fetchrow(
                f"INSERT INTO staff_members (email, email_canonical, role) VALUES ($1, $2, $3)"
                f" RETURNING {_COLUMNS}",
                email,
                canonical_email(email),
                role,
            )
        except asyncpg.UniqueViolationError as exc:
            raise EmailTaken(email) from exc
        member = _member(row)
        assert member is not None
        return member

    async def by_id(
        self, staff_id: str, *, conn: Any = None, lock: bool = False
    ) -> StaffMember | None:
        """The member, or None (also for a string that is not a uuid); `lock` holds the row
        until the caller's transaction ends (for changes that must not cross)."""
        executor = conn if conn is not None else self._pool
        try:
            row = await executor.fetchrow(
                f"SELECT {_COLUMNS} FROM staff_members WHERE id = $1::uuid"
                + (" FOR UPDATE" if lock else ""),
                staff_id,
            )
        except asyncpg.DataError:
            return None
        return _member(row)

    async def by_email(self, email: str) -> StaffMember | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM staff_members WHERE email_canonical = $1",
            canonical_email(email),
        )
        return _member(row)

    async def everyone(self) -> list[StaffMember]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM staff_members ORDER BY email_canonical"
        )
        return [member for row in rows if (member := _member(row)) is not None]

    async def lock(self, staff_ids: list[str], *, conn: Any) -> dict[str, StaffMember]:
        """The members `staff_ids` name (uuids as stored), their rows locked in one order by
        id: two changes that lock the same two rows wait for each other, never deadlock."""
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM staff_members WHERE id = ANY($1::uuid[])"
            " ORDER BY id FOR UPDATE",
            staff_ids,
        )
        return {member.id: member for row in rows if (member := _member(row)) is not None}

    async def set_disabled(self, staff_id: str, disabled: bool, *, conn: Any) -> bool:
        """Whether anything changed."""
        status = await conn.execute(
            "UPDATE staff_members SET disabled = $2 WHERE id = $1::uuid AND disabled <> $2",
            staff_id,
            disabled,
        )
        return bool(status.endswith(" 1"))

    async def set_role(self, staff_id: str, role: Role, *, conn: Any) -> bool:
        status = await conn.execute(
            "UPDATE staff_members SET role = $2 WHERE id = $1::uuid AND role <> $2", staff_id, role
        )
        return bool(status.endswith(" 1"))

    async def set_password_hash(
        self, staff_id: str, new_hash: str, *, expected: str | None = None, conn: Any = None
    ) -> bool:
        """Store a new hash; with `expected`, only if the stored one is still that."""
        executor = conn if conn is not None else self._pool
        status = await executor.execute(
            "UPDATE staff_members SET password_hash = $2 WHERE id = $1::uuid"
            " AND ($3::text IS NULL OR password_hash = $3)",
            staff_id,
            new_hash,
            expected,
        )
        return bool(status.endswith(" 1"))

    async def mark_activated(self, staff_id: str, *, conn: Any) -> bool:
        """Whether this activated the member (False: activated already)."""
        status = await conn.execute(
            "UPDATE staff_members SET activated_at = now() WHERE id = $1::uuid"
            " AND activated_at IS NULL",
            staff_id,
        )
        return bool(status.endswith(" 1"))

    async def start_over(self, staff_id: str, *, conn: Any) -> None:
        """Back to a new member's state: no password, not activated (the lost-factor
        procedure: the member goes through activation again)."""
        await conn.execute(
            "UPDATE staff_members SET password_hash = NULL, activated_at = NULL"
            " WHERE id = $1::uuid",
            staff_id,
        )

    # --- activation links ---------------------------------------------------------------

    async def issue_link(self, staff_id: str, ttl: float, *, conn: Any) -> str:
        """A new activation token; every older one of the member stops working."""
        await self.void_links(staff_id, conn=conn)
        token = secrets.token_urlsafe(32)
        await conn.execute(
            "INSERT INTO staff_tokens (token_hash, staff_id, expires_at)"
            " VALUES ($1, $2::uuid, now() + make_interval(secs => $3))",
            token_hash(token),
            staff_id,
            ttl,
        )
        return token

    async def link_holder(self, token: str) -> str | None:
        """The member a live token belongs to, without spending it (GET shows a form)."""
        if not plausible(token):
            return None
        value = await self._pool.fetchval(
            "SELECT staff_id::text FROM staff_tokens WHERE token_hash = $1"
            " AND used_at IS NULL AND expires_at > now()",
            token_hash(token),
        )
        return str(value) if value is not None else None

    async def spend_link(self, token: str, *, conn: Any) -> str | None:
        if not plausible(token):
            return None
        value = await conn.fetchval(
            "UPDATE staff_tokens SET used_at = now() WHERE token_hash = $1"
            " AND used_at IS NULL AND expires_at > now() RETURNING staff_id::text",
            token_hash(token),
        )
        return str(value) if value is not None else None

    async def void_links(self, staff_id: str, *, conn: Any) -> None:
        await conn.execute(
            "UPDATE staff_tokens SET used_at = now() WHERE staff_id = $1::uuid AND used_at IS NULL",
            staff_id,
        )

    async def purge_links(self) -> int:
        status = await self._pool.execute(
            "DELETE FROM staff_tokens WHERE expires_at < now() - interval '30 days'"
        )
        return int(status.split()[-1])
