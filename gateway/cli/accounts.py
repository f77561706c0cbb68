"""`library-gateway accounts …`, `keys …` and `migrate`: commands on the account database."""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg

from auth.credentials.emails import plausible as _plausible_email
from auth.credentials.password_policy import PasswordPolicy, PasswordRejected
from auth.credentials.passwords import PasswordHasher
from auth.credentials.usernames import UsernameRejected, check_username
from auth.mail import Composer
from auth.pages.activation import AlreadyActive, Invitations
from auth.services import template_environment
from auth.sessions.registry import SessionRegistry
from auth.signing import KeyStore
from auth.store.accounts import Account, Accounts, PassNumberTaken, UsernameTaken
from auth.store.audit import AuditTrail
from auth.store.links import Links
from gateway import database
from gateway.cli import bootstrap, mailing, operator
from gateway.cli.main import load_settings


def _fail(message: str) -> int:
    print(f"library-gateway: {message}", file=sys.stderr)
    return 1


def add_command(args: argparse.Namespace) -> int:
    settings = load_settings(data_dir=args.data_dir)
    if not _plausible_email(args.email):
        return _fail(f"not an e-mail address: {args.email!r}")
    password = sys.stdin.readline().rstrip("\r\n")
    pass_number = args.pass_number.strip()
    try:
        username = check_username(
            args.username or pass_number,
            own_pass_number=pass_number,
            pass_number_pattern=settings.pass_number_pattern,
        )
        PasswordPolicy().check(password, username=username, pass_number=pass_number)
    except (UsernameRejected, PasswordRejected) as exc:
        return _fail(str(exc))
    url = bootstrap.database_url(settings)

    async def add() -> str:
        hasher = PasswordHasher(
            max_workers=1,
            memory_cost=settings.argon2_memory_kib,
            time_cost=settings.argon2_time_cost,
        )
        try:
            password_hash = await hasher.hash(password)
        finally:
            hasher.close()
        async with bootstrap.migrated_pool(url, settings) as pool:
            accounts = Accounts(pool)
            async with accounts.transaction() as conn:
                account = await accounts.add(
                    pass_number=pass_number,
                    email=args.email,
                    username=username,
                    password_hash=password_hash,
                    conn=conn,
                )
                await AuditTrail(pool).record(
                    operator.event("operator_account_added", "accounts add", account.id),
                    conn=conn,
                )
        return account.id

    try:
        account_id = asyncio.run(add())
    except PassNumberTaken:
        return _fail(f"an account with pass number {pass_number} exists already")
    except UsernameTaken:
        return _fail(f"the username {username!r} is taken")
    print(f"account {account_id} created: username {username}, pass number {pass_number}")
    return 0


def invite_command(args: argparse.Namespace) -> int:
    settings = load_settings(data_dir=args.data_dir)
    if not _plausible_email(args.email.strip()):
        return _fail(f"not an e-mail address: {args.email!r}")
    url = bootstrap.database_url(settings)

    async def go() -> tuple[str, str]:
        async with bootstrap.migrated_pool(url, settings) as pool:
            invitations = Invitations(
                Accounts(pool),
                Links(pool),
                Composer(template_environment(), settings.theme_name or "De Bibliotheek"),
                settings.public_url,
                settings.activation_token_ttl,
                audit=AuditTrail(pool),
            )
            return await mailing.queue_and_send(
                pool,
                settings,
                lambda: invitations.send(
                    args.pass_number.strip(),
                    args.email.strip(),
                    args.lang,
                    actor=operator.os_actor(),
                    details={"command": "accounts invite"},
                ),
            )

    try:
        account_id, where = asyncio.run(go())
    except AlreadyActive:
        return _fail(f"pass number {args.pass_number} belongs to an active account already")
    print(f"invitation for account {account_id}: activation mail {where}")
    return 0


def disable_command(args: argparse.Namespace) -> int:
    return _set_disabled(args, disabled=True)


def enable_command(args: argparse.Namespace) -> int:
    return _set_disabled(args, disabled=False)


def _set_disabled(args: argparse.Namespace, *, disabled: bool) -> int:
    settings = load_settings(data_dir=args.data_dir)
    url = bootstrap.database_url(settings)

    async def go() -> tuple[Account | None, bool, int]:
        async with bootstrap.migrated_pool(url, settings) as pool:
            accounts = Accounts(pool)
            account = (
                await accounts.by_pass_number(args.pass_number)
                if args.pass_number is not None
                else await accounts.by_username(args.username)
            )
            if account is None:
                return None, False, 0
            ended = 0
            async with accounts.transaction() as conn:
                changed = await accounts.set_disabled(account.id, disabled, conn=conn)
                if disabled:
                    # Also when it was disabled already: a session made before the flag was
                    # set by hand in SQL ends now rather than when a cache entry runs out.
                    ended = await SessionRegistry(pool).revoke_account(account.id, conn=conn)
                    # A reset link mailed before must not reopen the account once enabled.
                    await Links(pool).void_all(conn, account.id)
                command = "accounts disable" if disabled else "accounts enable"
                await AuditTrail(pool).record(
                    operator.event(
                        "operator_account_changed",
                        command,
                        account.id,
                        disabled=disabled,
                        changed=changed,
                        sessions_ended=ended,
                    ),
                    conn=conn,
                )
            return account, changed, ended

    account, changed, ended = asyncio.run(go())
    if account is None:
        who = (
            f"pass number {args.pass_number}"
            if args.pass_number is not None
            else f"username {args.username!r}"
        )
        return _fail(f"no account with {who}")
    state = "disabled" if disabled else "enabled"
    if not changed:
        state += " already"
    sessions = f"; {ended} session{'' if ended == 1 else 's'} ended" if disabled else ""
    print(
        f"account {account.id} (username {account.username}, pass number "
        f"{account.pass_number}) {state}{sessions}"
    )
    return 0


def _with_keys(args: argparse.Namespace, action: str) -> int:
    settings = load_settings(data_dir=args.data_dir)
    url = bootstrap.database_url(settings)
    fernet = bootstrap.cookie_keys(settings)

    async def go() -> None:
        async with bootstrap.migrated_pool(url, settings) as pool:
            store = KeyStore(pool, fernet)
            await store.load()
            if action == "rotate":
                for (purpose, algorithm), kid in (await store.rotate()).items():
                    print(f"new active signing key: {kid} ({purpose} {algorithm})")
            elif action == "prune":
                pruned = await store.prune()
                print("pruned: " + (", ".join(pruned) if pruned else "nothing"))
            rows = await pool.fetch(
                "SELECT kid, purpose, algorithm, active, created_at, retired_at FROM signing_keys"
                " ORDER BY created_at, purpose, algorithm DESC"
            )
            for row in rows:
                state = "active" if row["active"] else f"retired {row['retired_at']:%Y-%m-%d %H:%M}"
                print(
                    f"{row['kid']}  {row['purpose']:<8} {row['algorithm']:<5}"
                    f"  created {row['created_at']:%Y-%m-%d %H:%M}  {state}"
                )

    asyncio.run(go())
    return 0


def keys_rotate_command(args: argparse.Namespace) -> int:
    return _with_keys(args, "rotate")


def keys_prune_command(args: argparse.Namespace) -> int:
    return _with_keys(args, "prune")


def keys_list_command(args: argparse.Namespace) -> int:
    return _with_keys(args, "list")


def migrate_command(args: argparse.Namespace) -> int:
    settings = load_settings(data_dir=args.data_dir)
    url = bootstrap.database_url(settings)

    try:
        applied = asyncio.run(database.migrate(database.direct_url(settings, url)))
    except (OSError, asyncpg.PostgresError) as exc:
        return _fail(f"cannot migrate the database: {exc}")
    print("applied: " + ", ".join(applied) if applied else "the database schema is up to date")
    return 0
