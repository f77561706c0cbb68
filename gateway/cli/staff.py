"""`library-gateway staff …`: staff accounts of the console, from the command line.

`add` makes a member and mails their activation link (through the outbox, like `accounts
invite`, sending that mail and no other at once: without GATEWAY_SMTP_URL it is a file in
DATA_DIR/outbox/; the link is never printed, since a terminal's scrollback and a CI log are
no place for it). `reset` is the lost-factor procedure; `disable`, `enable` and `role` do
what an admin's pages do. Every change writes its audit row (actor kind `operator`: the OS
user) in its own transaction.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from auth.audit import NO_ORIGIN
from auth.mail import Composer
from auth.services import template_environment
from auth.staff.management import StaffManagement
from auth.staff.model import StaffError, StaffMember
from auth.store.audit import AuditTrail
from auth.store.staff import StaffMembers
from auth.store.staff_factors import StaffFactors
from auth.store.staff_sessions import StaffSessions
from gateway.cli import bootstrap, mailing, operator
from gateway.cli.main import load_settings
from gateway.config.settings import Settings

_T = TypeVar("_T")
_WHY = {
    "email": "not an e-mail address",
    "email_taken": "there is a staff account with that e-mail address already",
    "role": "the role must be helpdesk or admin",
    "unknown": "no such staff member",
}


def _fail(message: str) -> int:
    print(f"library-gateway: {message}", file=sys.stderr)
    return 1


def staff_management(pool: asyncpg.Pool, settings: Settings) -> StaffManagement:
    members, factors, sessions = StaffMembers(pool), StaffFactors(pool), StaffSessions(pool)
    composer = Composer(template_environment(), settings.theme_name or "De Bibliotheek")
    return StaffManagement(
        members,
        factors,
        sessions,
        AuditTrail(pool),
        composer,
        settings.public_url,
        settings.activation_token_ttl,
    )


def _run(
    args: argparse.Namespace, work: Callable[[StaffManagement], Awaitable[_T]], *, mail: bool
) -> tuple[_T, str]:
    """`work` on the database; with `mail`, the mail it queued is sent at once if it can be
    (and no other: `gateway.cli.mailing`). The result, and where that mail went."""
    settings = load_settings(data_dir=args.data_dir)
    url = bootstrap.database_url(settings)

    async def go() -> tuple[_T, str]:
        async with bootstrap.migrated_pool(url, settings) as pool:
            management = staff_management(pool, settings)
            if not mail:
                return await work(management), ""
            return await mailing.queue_and_send(pool, settings, lambda: work(management))

    return asyncio.run(go())


async def _member(management: StaffManagement, email: str) -> StaffMember:
    member = await management.members.by_email(email)
    if member is None:
        raise _Unknown(email)
    return member


class _Unknown(StaffError):
    code = "unknown"


def add_command(args: argparse.Namespace) -> int:
    async def work(management: StaffManagement) -> StaffMember:
        return await management.invite(
            args.email,
            args.role,
            actor=operator.os_actor(),
            origin=NO_ORIGIN,
            reason=args.reason,
            lang=args.lang,
        )

    try:
        member, where = _run(args, work, mail=True)
    except StaffError as exc:
        return _fail(f"{_WHY.get(exc.code, exc.code)}: {args.email!r}")
    print(
        f"staff member {member.id} ({member.email}, {member.role}) added: activation mail {where}"
    )
    return 0


def reset_command(args: argparse.Namespace) -> int:
    async def work(management: StaffManagement) -> StaffMember:
        member = await _member(management, args.email)
        return await management.start_over(
            member.id,
            actor=operator.os_actor(),
            origin=NO_ORIGIN,
            reason=args.reason,
            lang=args.lang,
        )

    try:
        member, where = _run(args, work, mail=True)
    except StaffError as exc:
        return _fail(f"{_WHY.get(exc.code, exc.code)}: {args.email!r}")
    print(
        f"staff member {member.email}: password, second factors and recovery codes removed, "
        f"sessions ended; new activation mail {where}"
    )
    return 0


def disable_command(args: argparse.Namespace) -> int:
    return _set_disabled(args, disabled=True)


def enable_command(args: argparse.Namespace) -> int:
    return _set_disabled(args, disabled=False)


def _set_disabled(args: argparse.Namespace, *, disabled: bool) -> int:
    async def work(management: StaffManagement) -> tuple[StaffMember, bool, int]:
        member = await _member(management, args.email)
        return await management.set_disabled(
            member.id, disabled, actor=operator.os_actor(), origin=NO_ORIGIN, reason=args.reason
        )

    try:
        (member, changed, ended), _ = _run(args, work, mail=False)
    except StaffError as exc:
        return _fail(f"{_WHY.get(exc.code, exc.code)}: {args.email!r}")
    state = ("disabled" if disabled else "enabled") + ("" if changed else " already")
    sessions = f"; {ended} session{'' if ended == 1 else 's'} ended" if disabled else ""
    print(f"staff member {member.email} {state}{sessions}")
    return 0


def role_command(args: argparse.Namespace) -> int:
    async def work(management: StaffManagement) -> tuple[StaffMember, bool]:
        member = await _member(management, args.email)
        return await management.set_role(
            member.id, args.role, actor=operator.os_actor(), origin=NO_ORIGIN, reason=args.reason
        )

    try:
        (member, changed), _ = _run(args, work, mail=False)
    except StaffError as exc:
        return _fail(f"{_WHY.get(exc.code, exc.code)}: {args.email!r}")
    print(f"staff member {member.email}: role {args.role}{'' if changed else ' already'}")
    return 0


def list_command(args: argparse.Namespace) -> int:
    async def work(management: StaffManagement) -> list[tuple[StaffMember, int]]:
        members = await management.members.everyone()
        return [(member, len(await management.factors.of(member.id))) for member in members]

    listed, _ = _run(args, work, mail=False)
    if not listed:
        print("no staff members; the first admin: library-gateway staff add --email E --role admin")
    for member, factors in listed:
        print(
            f"{member.email:<40} {member.role:<9} {member.state:<9} "
            f"{factors} factor{'' if factors == 1 else 's'}  {member.id}"
        )
    return 0
