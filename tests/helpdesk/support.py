"""What the helpdesk's tests share besides their fixtures (conftest.py): a member invited but
not yet active, a blocked login, and the state an action could change."""

from __future__ import annotations

from typing import Any

import asyncpg

from auth.credentials import throttle
from auth.pages.activation import Invitations
from auth.services import SERVICES, AuthServices
from auth.store.accounts import Account
from tests.helpers import Gateway, settle, unique_pass_number

BOUNCING = "bounce.example"  # mail to this domain is refused by its (real) SMTP server


async def new_member(gw: Gateway) -> Account:
    """A member invited by mail (`accounts invite`), not yet activated."""
    services = gw.app[SERVICES]
    number = unique_pass_number()
    account_id = await Invitations(
        services.accounts,
        services.links,
        services.composer,
        services.public_url,
        services.activation_ttl,
    ).send(number, f"member{number}@example.org")
    await settle(gw)
    account = await services.accounts.by_id(account_id)
    assert account is not None and account.password_hash is None
    return account


async def state_of(pool: asyncpg.Pool, account_id: str) -> dict[str, Any]:
    """Everything an action could change: the account, its live links, sessions, throttle
    and mails."""
    account = await pool.fetchrow(
        "SELECT username, email, disabled, password_hash FROM accounts WHERE id = $1::uuid",
        account_id,
    )
    assert account is not None
    counts = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM account_tokens WHERE account_id = $1::uuid"
        "        AND used_at IS NULL) AS links,"
        " (SELECT count(*) FROM sessions WHERE account_id = $1::uuid"
        "        AND revoked_at IS NULL) AS sessions,"
        " (SELECT count(*) FROM login_throttle WHERE key = $2) AS counters,"
        " (SELECT count(*) FROM outbox WHERE account_id = $1::uuid) AS mails",
        account_id,
        throttle.account_key(account_id, ""),
    )
    return {**dict(account), **dict(counts)}


async def block(services: AuthServices, account: Account) -> None:
    """Five wrong passwords for the account from somewhere else: its login is blocked."""
    for _ in range(5):
        await services.throttle.failed(throttle.account_key(account.id, ""), "addr:198.51.100.9")
