"""Staff members' second factors (`staff_factors`) and recovery codes
(`staff_recovery_codes`), migration 0011: every SQL statement that touches them.

Accepting a TOTP code and counting a passkey's use are conditional UPDATEs: a code whose step
is not newer than the last one accepted, or a passkey answer whose counter another request
has already moved, changes nothing, so a replay racing the original loses. Removing a factor
locks the member's row first, so two removals at once can never take the last one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

import asyncpg

from auth.staff.passkeys import KnownPasskey, NewPasskey

FactorKind = Literal["totp", "passkey"]


class CredentialTaken(Exception):
    """The passkey is registered already (to this member or another)."""


class TotpExists(Exception):
    """The member has a TOTP app already (one each)."""


class LastFactor(Exception):
    """Removing it would leave the member without a second factor."""


@dataclass(frozen=True, slots=True)
class Factor:
    """A factor as the "my security" and staff pages show it (no secret, no key)."""

    id: int
    kind: FactorKind
    name: str
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class TotpFactor:
    id: int
    sealed_secret: bytes
    last_step: int | None

    def __repr__(self) -> str:
        return f"TotpFactor(id={self.id})"


@dataclass(frozen=True, slots=True)
class PasskeyFactor:
    id: int
    credential_id: bytes
    public_key: bytes
    sign_count: int
    transports: tuple[str, ...]

    @property
    def known(self) -> KnownPasskey:
        return KnownPasskey(self.credential_id, self.transports)


class StaffFactors:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def of(self, staff_id: str) -> list[Factor]:
        rows = await self._pool.fetch(
            "SELECT id, kind, name, created_at, last_used_at FROM staff_factors"
            " WHERE staff_id = $1::uuid ORDER BY created_at, id",
            staff_id,
        )
        return [
            Factor(
                r["id"], cast(FactorKind, r["kind"]), r["name"], r["created_at"], r["last_used_at"]
            )
            for r in rows
        ]

    async def totp_of(self, staff_id: str) -> TotpFactor | None:
        row = await self._pool.fetchrow(
            "SELECT id, totp_secret, totp_last_step FROM staff_factors"
            " WHERE staff_id = $1::uuid AND kind = 'totp'",
            staff_id,
        )
        if row is None:
            return None
        return TotpFactor(row["id"], bytes(row["totp_secret"]), row["totp_last_step"])

    async def passkeys_of(self, staff_id: str) -> list[PasskeyFactor]:
        rows = await self._pool.fetch(
            "SELECT id, credential_id, public_key, sign_count, transports FROM staff_factors"
            " WHERE staff_id = $1::uuid AND kind = 'passkey' ORDER BY id",
            staff_id,
        )
        return [
            PasskeyFactor(
                r["id"],
                bytes(r["credential_id"]),
                bytes(r["public_key"]),
                int(r["sign_count"]),
                tuple(r["transports"]),
            )
            for r in rows
        ]

    async def add_totp(
        self, staff_id: str, sealed_secret: bytes, step: int, name: str, *, conn: Any
    ) -> int:
        try:
            return int(
                await conn.fetchval(
                    "INSERT INTO staff_factors (staff_id, kind, name, totp_secret, totp_last_step,"
                    " last_used_at) VALUES ($1::uuid, 'totp', $2, $3, $4, now()) RETURNING id",
                    staff_id,
                    name,
                    sealed_secret,
                    step,
                )
            )
        except asyncpg.UniqueViolationError as exc:
            raise TotpExists(staff_id) from exc

    async def accept_totp(self, factor_id: int, step: int, renewed_secret: bytes) -> bool:
        """Record `step` as the last accepted, if it is newer than the last one; False when
        another request accepted this step (or a later one) first."""
        status = await self._pool.execute(
            "UPDATE staff_factors SET totp_last_step = $2, totp_secret = $3, last_used_at = now()"
            " WHERE id = $1 AND kind = 'totp' AND (totp_last_step IS NULL OR totp_last_step < $2)",
            factor_id,
            step,
            renewed_secret,
        )
        return bool(status.endswith(" 1"))

    async def add_passkey(self, staff_id: str, key: NewPasskey, name: str, *, conn: Any) -> int:
        try:
            return int(
                await conn.fetchval(
                    "INSERT INTO staff_factors (staff_id, kind, name, credential_id, public_key,"
                    " sign_count, transports, last_used_at)"
                    " VALUES ($1::uuid, 'passkey', $2, $3, $4, $5, $6, now()) RETURNING id",
                    staff_id,
                    name,
                    key.credential_id,
                    key.public_key,
                    key.sign_count,
                    list(key.transports),
                )
            )
        except asyncpg.UniqueViolationError as exc:
            raise CredentialTaken from exc

    async def passkey_used(self, factor_id: int, old_count: int, new_count: int) -> bool:
        """Store the authenticator's new counter, unless another request moved it first."""
        status = await self._pool.execute(
            "UPDATE staff_factors SET sign_count = $3, last_used_at = now()"
            " WHERE id = $1 AND kind = 'passkey' AND sign_count = $2",
            factor_id,
            old_count,
            new_count,
        )
        return bool(status.endswith(" 1"))

    async def remove(self, staff_id: str, factor_id: int, *, conn: Any) -> Factor | None:
        """Remove one factor of the member's, never the last one (`LastFactor`); None when
        the member has no such factor."""
        await conn.execute("SELECT 1 FROM staff_members WHERE id = $1::uuid FOR UPDATE", staff_id)
        count = await conn.fetchval(
            "SELECT count(*) FROM staff_factors WHERE staff_id = $1::uuid", staff_id
        )
        row = await conn.fetchrow(
            "SELECT id, kind, name, created_at, last_used_at FROM staff_factors"
            " WHERE id = $1 AND staff_id = $2::uuid",
            factor_id,
            staff_id,
        )
        if row is None:
            return None
        if int(count) <= 1:
            raise LastFactor(staff_id)
        await conn.execute("DELETE FROM staff_factors WHERE id = $1", factor_id)
        return Factor(
            row["id"],
            cast(FactorKind, row["kind"]),
            row["name"],
            row["created_at"],
            row["last_used_at"],
        )

    async def remove_all(self, staff_id: str, *, conn: Any) -> None:
        await conn.execute("DELETE FROM staff_factors WHERE staff_id = $1::uuid", staff_id)
        await conn.execute("DELETE FROM staff_recovery_codes WHERE staff_id = $1::uuid", staff_id)

    # --- recovery codes --------------------------------------------------------------------

    async def replace_codes(self, staff_id: str, hashes: Sequence[bytes], *, conn: Any) -> None:
        """The member's recovery codes are these from now on (old ones stop working)."""
        await conn.execute("DELETE FROM staff_recovery_codes WHERE staff_id = $1::uuid", staff_id)
        await conn.executemany(
            "INSERT INTO staff_recovery_codes (staff_id, code_hash) VALUES ($1::uuid, $2)",
            [(staff_id, code_hash) for code_hash in hashes],
        )

    async def use_code(self, staff_id: str, code_hash: bytes, *, conn: Any = None) -> bool:
        """Spend an unused code; False when it is not one, or was used already."""
        executor = conn if conn is not None else self._pool
        status = await executor.execute(
            "UPDATE staff_recovery_codes SET used_at = now()"
            " WHERE staff_id = $1::uuid AND code_hash = $2 AND used_at IS NULL",
            staff_id,
            code_hash,
        )
        return bool(status.endswith(" 1"))

    async def codes_left(self, staff_id: str) -> int:
        return int(
            await self._pool.fetchval(
                "SELECT count(*) FROM staff_recovery_codes WHERE staff_id = $1::uuid"
                " AND used_at IS NULL",
                staff_id,
            )
        )
