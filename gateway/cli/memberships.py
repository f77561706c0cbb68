"""`library-gateway accounts membership add|end`: one pass of one institution, by hand.

A library's desk gives a patron's account a pass of theirs (`add`, the account named by any
of its login names), or takes one back (`end`: the pass no longer logs in nor counts for a
`require:` rule). The change and the notification that makes every running gateway re-read
the account are one transaction, so a proxied request sees the new memberships at once.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import date

from auth.importer import pass_number_problem, type_problem, valid_until_from
from auth.memberships import Membership
from auth.sessions.registry import SessionRegistry
from auth.store.accounts import Account, Accounts
from auth.store.audit import AuditTrail
from auth.store.memberships import Memberships, MembershipTaken
from gateway.cli import bootstrap, operator
from gateway.cli.institutions import ChosenInstitution, InstitutionUnknown, institution_for
from gateway.cli.main import load_settings


class _Refused(Exception):
    """The change was not made; the message says why."""


def _fail(message: str) -> int:
    print(f"library-gateway: {message}", file=sys.stderr)
    return 1


def _pass_number(args: argparse.Namespace, chosen: ChosenInstitution) -> str:
    number = str(args.pass_number).strip()
    problem = pass_number_problem(number, chosen.known)
    if problem:
        raise _Refused(problem)
    return number


def _membership(args: argparse.Namespace, chosen: ChosenInstitution) -> Membership:
    assert chosen.id is not None  # --institution is required here
    number = _pass_number(args, chosen)
    kind = (args.type or "").strip() or None
    problem = type_problem(kind, chosen.known) if kind is not None else None
    if problem:
        raise _Refused(problem)
    try:
        until: date | None = valid_until_from((args.valid_until or "").strip())
    except ValueError as exc:
        raise _Refused(str(exc)) from None
    return Membership(chosen.id, number, kind, until)


def _described(membership: Membership) -> str:
    extra = []
    if membership.type:
        extra.append(f"type {membership.type}")
    if membership.valid_until is not None:
        extra.append(f"valid until {membership.valid_until.isoformat()}")
    details = f" ({', '.join(extra)})" if extra else ""
    return f"{membership.institution} pass {membership.pass_number}{details}"


async def _taken(memberships: Memberships, membership: Membership, account: Account) -> str:
    holder = await memberships.holder(membership.institution, membership.pass_number)
    which = f"{membership.institution} pass {membership.pass_number}"
    if holder == account.id:
        return f"{which} is this account's already"
    if holder is not None:
        return f"{which} is taken: it belongs to another account"
    return f"{which} is taken: an ended membership had it, and a pass is never given twice"


def _named(account: Account) -> str:
    return f"account {account.id} (username {account.username})"


def membership_add_command(args: argparse.Namespace) -> int:
    settings = load_settings(data_dir=args.data_dir)
    try:
        membership = _membership(args, institution_for(args))
    except (InstitutionUnknown, _Refused) as exc:
        return _fail(str(exc))
    url = bootstrap.database_url(settings)

    async def go() -> Account:
        async with bootstrap.migrated_pool(url, settings) as pool:
            accounts, memberships = Accounts(pool), Memberships(pool)
            account = await accounts.by_login_name(args.account.strip())
            if account is None:
                raise _Refused(f"no account with username or pass number {args.account!r}")
            # Login tries usernames first: a pass number that is somebody else's username
            # would never log in.
            named = await accounts.by_username(membership.pass_number)
            if named is not None and named.id != account.id:
                raise _Refused(
                    f"pass number {membership.pass_number!r} is the username of another account"
                )
            async with accounts.transaction() as conn:
                survivor = await accounts.merged_into(account.id, conn=conn)
                if survivor is not None:
                    raise _Refused(
                        f"account {account.username!r} was merged into {survivor!r};"
                        " add the pass there"
                    )
                try:
                    await memberships.add(account.id, membership, conn=conn)
                except MembershipTaken:
                    raise _Refused(await _taken(memberships, membership, account)) from None
                await SessionRegistry(pool).account_changed(account.id, conn)
                await AuditTrail(pool).record(
                    operator.event(
                        "pass_linked",
                        "accounts membership add",
                        account.id,
                        passes=[f"{membership.institution}:{membership.pass_number}"],
                    ),
                    conn=conn,
                )
            return account

    try:
        account = asyncio.run(go())
    except _Refused as exc:
        return _fail(str(exc))
    print(f"{_described(membership)} added to {_named(account)}")
    return 0


def membership_end_command(args: argparse.Namespace) -> int:
    settings = load_settings(data_dir=args.data_dir)
    try:
        chosen = institution_for(args)
        number = _pass_number(args, ChosenInstitution(chosen.id))  # (ended, whatever its form)
    except (InstitutionUnknown, _Refused) as exc:
        return _fail(str(exc))
    assert chosen.id is not None
    institution = chosen.id
    url = bootstrap.database_url(settings)

    async def go() -> Account | None:
        async with bootstrap.migrated_pool(url, settings) as pool:
            accounts = Accounts(pool)
            async with accounts.transaction() as conn:
                account_id = await Memberships(pool).end(institution, number, conn=conn)
                if account_id is None:
                    return None
                await SessionRegistry(pool).account_changed(account_id, conn)
                await AuditTrail(pool).record(
                    operator.event(
                        "membership_ended",
                        "accounts membership end",
                        account_id,
                        passes=[f"{institution}:{number}"],
                    ),
                    conn=conn,
                )
            return await accounts.by_id(account_id)

    account = asyncio.run(go())
    if account is None:
        return _fail(f"no live membership with {institution} pass {number}")
    print(f"{institution} pass {number} of {_named(account)} ended")
    return 0
