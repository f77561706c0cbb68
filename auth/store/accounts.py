"""The accounts table, and every SQL statement that touches it.

Usernames and pass numbers are looked up by their canonical form (NFKC + case folding), so a
full-width `JAN`, `jan` and `Jan` are one name. A login name matches the current username
first, then the pass number, so a username can never shadow somebody else's pass number.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import asyncpg

from auth.credentials.usernames import canonical
from auth.store.memberships import DEFAULT_INSTITUTION


class AccountError(Exception):
    """Base of the repository's refusals."""


class UsernameTaken(AccountError):
    """The username (or a pass number equal to it) belongs to another account."""


class PassNumberTaken(AccountError):
    """An account with this pass number exists already."""


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    pass_number: str
    username: str
    email: str | None
    password_hash: str | None
    disabled: bool
    device_epoch: int = 0
    """Device cookies name this number; raising it voids all of them."""


def canonical_email(email: str) -> str:
    return unicodedata.normalize("NFKC", email).strip().casefold()


_COLUMNS = "id::text AS id, pass_number, username, email, password_hash, disabled, device_epoch"
_A_COLUMNS = ", ".join(f"a.{column}" for column in _COLUMNS.split(", "))


def _account(row: asyncpg.Record | None) -> Account | None:
    if row is None:
        return None
    return Account(
        row["id"],
        row["pass_number"],
        row["username"],
        row["email"],
        row["password_hash"],
        row["disabled"],
        row["device_epoch"],
    )


class Accounts:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def add(
        self,
        *,
        pass_number: str,
        email: str | None,
        username: str | None = None,
        password_hash: str | None = None,
        institution: str | None = None,
        conn: Any = None,
    ) -> Account:
        """A new account, with its pass as a membership of `institution` (None: the default
        institution); in the caller's transaction when `conn` is given (its audit row with
        it)."""
        username = username or pass_number
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(self.transaction())
            # A pass number may not equal another account's username either: login accepts
            # both, so the two would shadow each other.
            taken = await conn.fetchval(
                "SELECT 1 FROM accounts WHERE username_canonical = $1 UNION ALL"
                " SELECT 1 FROM memberships WHERE pass_number_canonical = $1"
                f" AND institution = coalesce($2, {DEFAULT_INSTITUTION})",
                canonical(pass_number),
                institution,
            )
            if taken:
                raise PassNumberTaken(pass_number)
            await self._check_username_free(conn, username, exclude_id=None)
            try:
                row = await conn.fetchrow(
                    "INSERT INTO accounts (pass_number, pass_number_canonical, username,"
                    " username_canonical, email, email_canonical, password_hash)"
                    f" VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_COLUMNS}",
                    pass_number,
                    canonical(pass_number),
                    username,
                    canonical(username),
                    email,
                    canonical_email(email) if email else None,
                    password_hash,
                )
                await self._add_membership(conn, row["id"], pass_number, institution)
            except asyncpg.UniqueViolationError as exc:
                if "pass_number" in (exc.constraint_name or ""):
                    raise PassNumberTaken(pass_number) from exc
                raise UsernameTaken(username) from exc
        account = _account(row)
        assert account is not None
        return account

    @staticmethod
    async def _add_membership(
        conn: asyncpg.Connection, account_id: str, pass_number: str, institution: str | None
    ) -> None:
        await conn.execute(
            "INSERT INTO memberships (account_id, institution, pass_number, pass_number_canonical)"
            f" VALUES ($1::uuid, coalesce($2, {DEFAULT_INSTITUTION}), $3, $4)",
            account_id,
            institution,
            pass_number,
            canonical(pass_number),
        )

    async def _check_username_free(
        self, conn: asyncpg.Connection, username: str, exclude_id: str | None
    ) -> None:
        name = canonical(username)
        clash = await conn.fetchval(
            "SELECT 1 FROM accounts WHERE username_canonical = $1"
            " AND ($2::uuid IS NULL OR id <> $2::uuid) UNION ALL"
            " SELECT 1 FROM memberships WHERE pass_number_canonical = $1 AND ended_at IS NULL"
            " AND ($2::uuid IS NULL OR account_id <> $2::uuid)",
            name,
            exclude_id,
        )
        if clash:
            raise UsernameTaken(username)

    async def by_login_name(self, name: str) -> Account | None:
        """The account a login name names: its username first, else any of the live passes
        of any institution (the default institution's first, should two libraries have
        handed out the same number to different patrons)."""
        key = canonical(name)
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM accounts WHERE username_canonical = $1",
            key,
        )
        return _account(row) if row is not None else await self.by_pass_number(name)

    async def by_pass_number(self, pass_number: str) -> Account | None:
        row = await self._pool.fetchrow(
            f"SELECT {_A_COLUMNS} FROM memberships m JOIN accounts a ON a.id = m.account_id"
            " WHERE m.pass_number_canonical = $1 AND m.ended_at IS NULL"
            " AND a.merged_into IS NULL"
            f" ORDER BY (m.institution = {DEFAULT_INSTITUTION}) DESC, m.institution LIMIT 1",
            canonical(pass_number),
        )
        return _account(row)

    async def merged_into(self, account_id: str, *, conn: Any) -> str | None:
        """The username of the account `account_id` was merged into, or None while it is an
        account of its own; its row is locked until the caller's transaction ends, so a
        merge cannot come between this answer and what the caller does with it."""
        value = await conn.fetchval(
            "SELECT s.username FROM accounts a LEFT JOIN accounts s ON s.id = a.merged_into"
            " WHERE a.id = $1::uuid FOR UPDATE OF a",
            account_id,
        )
        return str(value) if value is not None else None

    async def by_username(self, username: str) -> Account | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM accounts WHERE username_canonical = $1",
            canonical(username),
        )
        return _account(row)

    async def set_disabled(self, account_id: str, disabled: bool, *, conn: Any = None) -> bool:
        """Block or unblock logging in; True when that changed anything."""
        executor = conn if conn is not None else self._pool
        status = await executor.execute(
            "UPDATE accounts SET disabled = $2, updated_at = now()"
            " WHERE id = $1::uuid AND disabled <> $2",
            account_id,
            disabled,
        )
        return bool(status == "UPDATE 1")

    async def by_id(self, account_id: str) -> Account | None:
        row = await self._pool.fetchrow(
            f"SELECT {_COLUMNS} FROM accounts WHERE id = $1::uuid", account_id
        )
        return _account(row)

    async def by_email(self, email: str) -> list[Account]:
        rows = await self._pool.fetch(
            f"SELECT {_COLUMNS} FROM accounts WHERE email_canonical = $1 ORDER BY username",
            canonical_email(email),
        )
        return [account for row in rows if (account := _account(row)) is not None]

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A connection in a transaction, for a change and the mail it causes together."""
        async with self._pool.acquire() as conn, conn.transaction():
            yield conn

    async def set_password_hash(
        self, account_id: str, new_hash: str, *, expected: str | None = None, conn: Any = None
    ) -> bool:
        """Store a new hash; with `expected`, only if the stored one is still that (so a
        login's opportunistic rehash never overwrites a password changed meanwhile)."""
        executor = conn if conn is not None else self._pool
        status = await executor.execute(
            "UPDATE accounts SET password_hash = $2, updated_at = now()"
            " WHERE id = $1::uuid AND ($3::text IS NULL OR password_hash = $3)",
            account_id,
            new_hash,
            expected,
        )
        return bool(status == "UPDATE 1")

    async def void_devices(self, account_id: str, *, conn: Any = None) -> None:
        """Every device cookie of the account stops counting as a trusted device."""
        executor = conn if conn is not None else self._pool
        await executor.execute(
            "UPDATE accounts SET device_epoch = device_epoch + 1 WHERE id = $1::uuid", account_id
        )

    async def set_username(self, account_id: str, username: str, *, conn: Any = None) -> None:
        async with contextlib.AsyncExitStack() as stack:
            if conn is None:
                conn = await stack.enter_async_context(self.transaction())
            await self._check_username_free(conn, username, exclude_id=account_id)
            try:
                # A savepoint, so a lost race leaves the caller's transaction usable.
                async with conn.transaction():
                    await conn.execute(
                        "UPDATE accounts SET username = $2, username_canonical = $3,"
                        " updated_at = now() WHERE id = $1::uuid",
                        account_id,
                        username,
                        canonical(username),
                    )
            except asyncpg.UniqueViolationError as exc:
                raise UsernameTaken(username) from exc

    async def set_email(self, account_id: str, email: str, *, conn: Any = None) -> None:
        executor = conn if conn is not None else self._pool
        await executor.execute(
            "UPDATE accounts SET email = $2, email_canonical = $3, updated_at = now()"
            " WHERE id = $1::uuid",
            account_id,
            email,
            canonical_email(email),
        )

    async def check_import(
        self, *, pass_number: str, username: str, institution: str | None = None
    ) -> bool:
        """True when an account with this pass number exists (an import skips the row).

        Raises ``PassNumberTaken`` when the pass number is another account's username (a login
        with it would reach that account), ``UsernameTaken`` when the username is another
        account's username or pass number. Reads only: a dry run uses it as it is.
        """
        async with self._pool.acquire() as conn:
            return await self._import_clash(conn, pass_number, username, institution)

    async def import_account(
        self,
        *,
        pass_number: str,
        email: str,
        username: str,
        password_hash: str | None,
        institution: str | None = None,
        type: str | None = None,  # the membership's type, the CSV's column
        valid_until: date | None = None,
    ) -> bool:
        """Insert an imported account; False, and nothing changed, when one with this pass
        number exists already, so running an import twice never overwrites a password the
        patron has changed since. Refuses clashes as ``check_import`` does."""
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if await self._import_clash(conn, pass_number, username, institution):
                    return False
                try:
                    created = await conn.fetchval(
                        "INSERT INTO accounts (pass_number, pass_number_canonical, username,"
                        " username_canonical, email, email_canonical, password_hash)"
                        " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id::text",
                        pass_number,
                        canonical(pass_number),
                        username,
                        canonical(username),
                        email,
                        canonical_email(email),
                        password_hash,
                    )
                except asyncpg.UniqueViolationError as exc:
                    raise UsernameTaken(username) from exc
                await conn.execute(
                    "INSERT INTO memberships (account_id, institution, pass_number,"
                    " pass_number_canonical, type, valid_until)"
                    f" VALUES ($1::uuid, coalesce($2, {DEFAULT_INSTITUTION}), $3, $4, $5, $6)",
                    created,
                    institution,
                    pass_number,
                    canonical(pass_number),
                    type,
                    valid_until,
                )
        except asyncpg.UniqueViolationError:
            return False  # the same pass of the institution, imported at the same moment
        return True

    async def _import_clash(
        self, conn: asyncpg.Connection, pass_number: str, username: str, institution: str | None
    ) -> bool:
        number, name = canonical(pass_number), canonical(username)
        row = await conn.fetchrow(
            "SELECT EXISTS (SELECT 1 FROM memberships WHERE pass_number_canonical = $1"
            f" AND institution = coalesce($3, {DEFAULT_INSTITUTION})) AS present,"
            " EXISTS (SELECT 1 FROM accounts WHERE username_canonical = $1) AS number_taken,"
            " EXISTS (SELECT 1 FROM accounts WHERE username_canonical = $2"
            " UNION ALL SELECT 1 FROM memberships WHERE pass_number_canonical = $2"
            " AND ended_at IS NULL) AS name_taken",
            number,
            name,
            institution,
        )
        if row["present"]:
            return True
        if row["number_taken"]:
            raise PassNumberTaken(pass_number)
        if row["name_taken"]:
            raise UsernameTaken(username)
        return False
