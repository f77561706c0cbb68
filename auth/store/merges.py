"""Two accounts made one: the SQL of a merge, and the `account_merges` record of each.

A patron proves a pass of another account (its password) and that account goes into theirs.
Everything happens in the caller's transaction, under row locks on both accounts taken in
one fixed order (by id), so two merges of the same pass into two accounts, or two patrons
linking each other's pass at once, queue behind each other instead of deadlocking; whichever
comes second finds the state the first left (the pass moved, an account merged) and is
refused. The absorbed account stays as a record: disabled, `merged_into` the survivor, its
username freed (a placeholder no login name can be, as usernames may not hold `:`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from auth.credentials.usernames import canonical

_MERGED_NAME = "merged:{}"


@dataclass(frozen=True, slots=True)
class Holder:
    """The account a live pass of an institution belongs to, as a link needs it."""

    id: str
    username: str
    email: str | None
    password_hash: str | None
    disabled: bool
    merged_into: str | None


class Refusal(enum.Enum):
    """Why the merge did not happen (nothing was written)."""

    OWN = "own"  # the pass is the patron's already
    MOVED = "moved"  # the pass is no longer the account's it was proved on (merged meanwhile)
    BLOCKED = "blocked"  # one of the two accounts is disabled or merged
    UNPROVED = "unproved"  # the password proved is no longer the account's (changed meanwhile)


@dataclass(frozen=True, slots=True)
class Merged:
    absorbed: Holder
    passes: tuple[str, ...]  # what moved, as `institution:pass_number`


async def pass_holder(conn: Any, institution: str, pass_number: str) -> Holder | None:
    """The account holding this live pass of the institution, whatever its state."""
    row = await conn.fetchrow(
        "SELECT a.id::text AS id, a.username, a.email, a.password_hash, a.disabled,"
        " a.merged_into::text AS merged_into FROM memberships m"
        " JOIN accounts a ON a.id = m.account_id"
        " WHERE m.institution = $1 AND m.pass_number_canonical = $2 AND m.ended_at IS NULL",
        institution,
        canonical(pass_number),
    )
    return None if row is None else Holder(**dict(row))


async def merge(
    conn: Any,
    survivor: str,
    absorbed: str,
    institution: str,
    pass_number: str,
    *,
    proved: str | None,
) -> Merged | Refusal:
    """Move every live membership of `absorbed` to `survivor` and retire `absorbed`, if the
    pass (proved a moment ago against the password hash `proved`) is still `absorbed`'s, its
    password is still that one, and neither account is blocked or merged once both are
    locked. Call inside a transaction; the caller ends the absorbed account's sessions and
    links, and tells every instance, in the same one.

    The password is checked before the locks (argon2 takes a while, and must not hold them):
    a password changed or reset in between, by an owner who fears it leaked, leaves the
    proof worthless, so the merge is refused rather than done on the old one's word."""
    if survivor == absorbed:
        return Refusal.OWN
    states = {}
    for account_id in sorted((survivor, absorbed)):  # one order for every merge: no deadlock
        states[account_id] = await conn.fetchrow(
            "SELECT id::text AS id, username, email, password_hash, disabled,"
            " merged_into::text AS merged_into FROM accounts WHERE id = $1::uuid FOR UPDATE",
            account_id,
        )
    holder = await conn.fetchval(
        "SELECT account_id::text FROM memberships WHERE institution = $1"
        " AND pass_number_canonical = $2 AND ended_at IS NULL",
        institution,
        canonical(pass_number),
    )
    if holder == survivor:
        return Refusal.OWN
    if holder != absorbed:
        return Refusal.MOVED
    if any(row is None or row["disabled"] or row["merged_into"] for row in states.values()):
        return Refusal.BLOCKED
    if states[absorbed]["password_hash"] != proved:
        return Refusal.UNPROVED
    moved = await conn.fetch(
        "UPDATE memberships SET account_id = $1::uuid WHERE account_id = $2::uuid"
        " AND ended_at IS NULL RETURNING institution, pass_number",
        survivor,
        absorbed,
    )
    passes = tuple(f"{row['institution']}:{row['pass_number']}" for row in moved)
    placeholder = _MERGED_NAME.format(absorbed)
    await conn.execute(
        "UPDATE accounts SET merged_into = $2::uuid, disabled = true, username = $3,"
        " username_canonical = $4, updated_at = now() WHERE id = $1::uuid",
        absorbed,
        survivor,
        placeholder,
        canonical(placeholder),
    )
    old = states[absorbed]
    await conn.execute(
        "INSERT INTO account_merges (survivor, absorbed, username, passes)"
        " VALUES ($1::uuid, $2::uuid, $3, $4)",
        survivor,
        absorbed,
        old["username"],
        ",".join(passes),
    )
    return Merged(Holder(**dict(old)), passes)
