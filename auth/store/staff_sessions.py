"""Staff sessions (`staff_sessions`, migration 0011): every SQL statement that touches them.

The cookie's token is never stored, only its SHA-256. A session read for a request comes
with its member (e-mail, role, disabled) and the database's clock, so the decision whether
it is still live (`auth.staff.sessions.live`) is taken by one clock for every instance.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any, cast

import asyncpg

from auth.staff.model import Role
from auth.staff.sessions import Stage, new_token, plausible


def _hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


@dataclass(frozen=True, slots=True)
class StaffSession:
    id: int
    staff_id: str
    email: str
    role: Role
    disabled: bool
    stage: Stage
    created_at: dt.datetime
    last_seen_at: dt.datetime
    now: dt.datetime


class StaffSessions:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def create(
        self,
        staff_id: str,
        stage: Stage,
        *,
        user_agent: str | None = None,
        remote: str | None = None,
        conn: Any = None,
    ) -> str:
        """A new session; returns the token for the cookie."""
        token = new_token()
        executor = conn if conn is not None else self._pool
        await executor.execute(
            "INSERT INTO staff_sessions (token_hash, staff_id, stage, user_agent, remote)"
            " VALUES ($1, $2::uuid, $3, $4, $5)",
            _hash(token),
            staff_id,
            stage,
            user_agent[:300] if user_agent else None,
            remote,
        )
        return token

    async def find(self, token: str | None) -> StaffSession | None:
        """The session a cookie names, if it has not been ended (live or not: the caller
        judges)."""
        if not plausible(token):
            return None
        assert token is not None
        row = await self._pool.fetchrow(
            "SELECT s.id, s.staff_id::text AS staff_id, m.email, m.role, m.disabled, s.stage,"
            " s.created_at, s.last_seen_at, now() AS now"
            " FROM staff_sessions s JOIN staff_members m ON m.id = s.staff_id"
            " WHERE s.token_hash = $1 AND s.ended_at IS NULL",
            _hash(token),
        )
        if row is None:
            return None
        return StaffSession(
            id=row["id"],
            staff_id=row["staff_id"],
            email=row["email"],
            role=cast(Role, row["role"]),
            disabled=row["disabled"],
            stage=cast(Stage, row["stage"]),
            created_at=row["created_at"],
            last_seen_at=row["last_seen_at"],
            now=row["now"],
        )

    async def touch(self, session_id: int) -> None:
        await self._pool.execute(
            "UPDATE staff_sessions SET last_seen_at = now() WHERE id = $1", session_id
        )

    async def end(self, session_id: int, *, conn: Any = None) -> None:
        executor = conn if conn is not None else self._pool
        await executor.execute(
            "UPDATE staff_sessions SET ended_at = now(), challenge = NULL, pending_totp = NULL"
            " WHERE id = $1 AND ended_at IS NULL",
            session_id,
        )

    async def end_all(self, staff_id: str, *, conn: Any = None) -> int:
        """End every session of the member; returns how many were live."""
        executor = conn if conn is not None else self._pool
        status = await executor.execute(
            "UPDATE staff_sessions SET ended_at = now(), challenge = NULL, pending_totp = NULL"
            " WHERE staff_id = $1::uuid AND ended_at IS NULL",
            staff_id,
        )
        return int(status.split()[-1])

    async def advance(
        self,
        session: StaffSession,
        stage: Stage,
        *,
        user_agent: str | None = None,
        remote: str | None = None,
        conn: Any = None,
    ) -> str | None:
        """End `session` and start its successor at `stage` with a new token; None when the
        session was ended meanwhile (a second request with the same cookie got there first)."""
        executor = conn if conn is not None else self._pool
        status = await executor.execute(
            "UPDATE staff_sessions SET ended_at = now(), challenge = NULL, pending_totp = NULL"
            " WHERE id = $1 AND ended_at IS NULL",
            session.id,
        )
        if not status.endswith(" 1"):
            return None
        return await self.create(
            session.staff_id, stage, user_agent=user_agent, remote=remote, conn=executor
        )

    # --- what a ceremony keeps between its two requests -----------------------------------

    async def set_challenge(self, session_id: int, challenge: bytes) -> None:
        await self._pool.execute(
            "UPDATE staff_sessions SET challenge = $2 WHERE id = $1", session_id, challenge
        )

    async def take_challenge(self, session_id: int) -> bytes | None:
        """The pending WebAuthn challenge, used up: each answers one attempt only."""
        value = await self._pool.fetchval(
            "WITH old AS (SELECT id, challenge FROM staff_sessions WHERE id = $1 FOR UPDATE)"
            " UPDATE staff_sessions s SET challenge = NULL FROM old WHERE s.id = old.id"
            " RETURNING old.challenge",
            session_id,
        )
        return bytes(value) if value is not None else None

    async def set_pending_totp(self, session_id: int, sealed_secret: bytes) -> None:
        await self._pool.execute(
            "UPDATE staff_sessions SET pending_totp = $2 WHERE id = $1", session_id, sealed_secret
        )

    async def pending_totp(self, session_id: int) -> bytes | None:
        value = await self._pool.fetchval(
            "SELECT pending_totp FROM staff_sessions WHERE id = $1", session_id
        )
        return bytes(value) if value is not None else None

    async def clear_pending_totp(self, session_id: int, *, conn: Any = None) -> None:
        executor = conn if conn is not None else self._pool
        await executor.execute(
            "UPDATE staff_sessions SET pending_totp = NULL WHERE id = $1", session_id
        )

    async def purge(self, lifetime: float) -> int:
        """Forget sessions ended over a day ago, or begun over a day before even the
        longest session would have ended (the audit trail keeps the story)."""
        status = await self._pool.execute(
            "DELETE FROM staff_sessions WHERE ended_at < now() - interval '1 day'"
            " OR created_at < now() - make_interval(secs => $1) - interval '1 day'",
            lifetime,
        )
        return int(status.split()[-1])
