"""The helpdesk's work on a patron: find them, see their state, act with a reason.

Every action is taken by a staff member (`auth.audit.Actor`, kind `staff`) with a short
reason, and writes its `helpdesk_*` row of the audit trail in the transaction of the change,
after locking the account's row: the change and its row commit together or not at all, and
what the action checked (not yet activated, not disabled) still holds when it commits. A
refusal (`auth.helpdesk.errors`) changes nothing and writes nothing.

Looking a patron up is recorded too: `overview` writes a `helpdesk_viewed` row once it knows
the account exists and before it reads the rest, so no page can show a patron's details
without leaving that row; every showing is one row (a page shown again after an action as
well). `find` is not recorded: it shows only the id, username, address and state of exact
matches, to pick one to open.

Staff never see or set a password. The mails sent here are the patron's own mails (the
reset mail of "forgot password", the invitation's activation mail), so a patron can check a
helpdesk's mail against any other; only the e-mail correction has a notice of its own, to
the old and the new address.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiohttp import web

from auth.audit import Actor, Event, Origin
from auth.credentials import emails, throttle
from auth.helpdesk import model
from auth.helpdesk.errors import (
    EmailRejected,
    NoSuchPatron,
    NotApplicable,
    NotStaff,
)
from auth.helpdesk.lookup import Lookup, account_id_of
from auth.helpdesk.model import PatronMatch, PatronOverview
from auth.mail import Outbox
from auth.oidc.clients import ClientSource
from auth.pages import i18n
from auth.pages.activation import Invitations
from auth.pages.recovery import queue_reset_mail
from auth.services import AuthServices
from auth.store.accounts import Account, canonical_email
from auth.store.helpdesk import HelpdeskStore
from auth.store.memberships import Memberships


def _staff(actor: Actor) -> None:
    if not isinstance(actor, Actor) or actor.kind != "staff" or not actor.id:
        raise NotStaff("only a staff member acts at the helpdesk")


def _language(lang: str) -> str:
    return lang if lang in i18n.LANGUAGES else i18n.DEFAULT


@dataclass
class _Act:
    """An action under way: its transaction, the locked account, and the facts its audit
    row will hold."""

    conn: Any
    account: asyncpg.Record
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.account["id"])

    def email(self) -> str:
        address = self.account["email"]
        if not address:
            raise NotApplicable("no_email", "The account has no e-mail address.")
        return str(address)

    def usable(self) -> None:
        if self.account["disabled"]:
            raise NotApplicable("disabled", "The account is disabled: enable it first.")


class Helpdesk:
    """`clients`: the connected libraries in force (to name them); None without federation."""

    def __init__(
        self, pool: asyncpg.Pool, services: AuthServices, *, clients: ClientSource | None = None
    ) -> None:
        self._store = HelpdeskStore(pool)
        self._memberships = Memberships(pool)
        self._services = services
        self._lookup = Lookup(self._store, services, clients)
        self._invitations = Invitations(
            services.accounts,
            services.links,
            services.composer,
            services.public_url,
            services.activation_ttl,
        )

    # --- Finding and seeing -------------------------------------------------------------

    async def find(self, query: str) -> list[PatronMatch]:
        """Accounts whose id, pass number (of any institution), username or e-mail address
        is exactly `query` (the names and the address compared in their canonical forms), at
        most `MAX_MATCHES`, best match first. Anything else finds nobody."""
        return await self._lookup.find(query)

    async def overview(
        self, account_id: str, *, actor: Actor, origin: Origin
    ) -> PatronOverview | None:
        """Everything the helpdesk sees of the patron; None when there is no such account.
        Writes the `helpdesk_viewed` row first (see the module's docstring)."""
        _staff(actor)
        target = account_id_of(account_id)
        row = await self._store.account(target) if target is not None else None
        if row is None:
            return None
        await self.viewed(row["id"], actor=actor, origin=origin)
        return await self._lookup.read(row, self._memberships)

    async def viewed(self, account_id: str, *, actor: Actor, origin: Origin) -> None:
        """Record that `actor` looked at the patron (`overview` does it itself)."""
        _staff(actor)
        target = account_id_of(account_id)
        if target is None:
            raise NoSuchPatron(str(account_id)[:64])
        await self._services.audit.record(
            Event("helpdesk_viewed", actor, origin, account_id=target)
        )

    # --- Acting ---------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _act(
        self, action: str, account_id: str, actor: Actor, origin: Origin, reason: str
    ) -> AsyncIterator[_Act]:
        """The transaction of one action: checks the actor and the reason, locks the account
        (refusing a merged-away one), and records the action's row when the body is done."""
        _staff(actor)
        stated = model.check_reason(reason)
        target = account_id_of(account_id)
        if target is None:
            raise NoSuchPatron(str(account_id)[:64])
        async with self._services.accounts.transaction() as conn:
            row = await self._store.lock(conn, target)
            if row is None:
                raise NoSuchPatron(target)
            if row["merged_into"] is not None:
                raise NotApplicable("merged", "The account was merged into another one.")
            act = _Act(conn, row)
            yield act
            await self._services.audit.record(
                Event(action, actor, origin, account_id=target, reason=stated, details=act.details),
                conn=conn,
            )

    async def send_reset(
        self,
        account_id: str,
        *,
        actor: Actor,
        origin: Origin,
        reason: str,
        lang: str = i18n.DEFAULT,
    ) -> str:
        """Mail the patron a password-reset link (the mail of "forgot password"); the
        address it went to."""
        async with self._act("helpdesk_reset_sent", account_id, actor, origin, reason) as act:
            act.usable()
            email = act.email()
            services = self._services
            token = await services.links.issue(act.id, "reset", services.reset_ttl, conn=act.conn)
            await queue_reset_mail(
                services, act.conn, _as_account(act.account), email, token, _language(lang)
            )
            act.details["to"] = email
        return email

    async def resend_activation(
        self,
        account_id: str,
        *,
        actor: Actor,
        origin: Origin,
        reason: str,
        lang: str = i18n.DEFAULT,
    ) -> str:
        """Mail a not yet activated account a fresh activation link (the invitation's mail;
        earlier links keep working until used or expired); the address it went to."""
        async with self._act(
            "helpdesk_activation_resent", account_id, actor, origin, reason
        ) as act:
            act.usable()
            if not act.account["not_activated"]:
                raise NotApplicable(
                    "activated", "The account is active already: send a password-reset link."
                )
            email = act.email()
            await self._invitations.queue_mail(
                act.conn, act.id, act.account["pass_number"], email, _language(lang)
            )
            act.details["to"] = email
        return email

    async def lift_block(
        self, account_id: str, *, actor: Actor, origin: Origin, reason: str
    ) -> bool:
        """Forget the account's failed logins, and so the block they caused (the counters of
        client addresses and of the patron's own browsers are left alone: an address is
        shared by a whole reading room). Whether a block was in force."""
        async with self._act("helpdesk_block_lifted", account_id, actor, origin, reason) as act:
            key = throttle.account_key(act.id, "")
            counter = await self._store.throttle(key, conn=act.conn)
            await self._services.throttle.succeeded(key, conn=act.conn)
            blocked = bool(counter is not None and counter["blocked"])
            act.details.update(failures=counter["failures"] if counter else 0, blocked=blocked)
        return blocked

    async def end_sessions(
        self, account_id: str, *, actor: Actor, origin: Origin, reason: str
    ) -> int:
        """End every session of the patron, on every instance, with a back-channel logout to
        every connected library they used in them (the patron's own "log out everywhere"),
        and their offline grants there too. How many sessions ended."""
        async with self._act("helpdesk_sessions_ended", account_id, actor, origin, reason) as act:
            ended = await self._services.registry.revoke_account(
                act.id, conn=act.conn, credentials=True
            )
            act.details["sessions"] = ended
        return ended

    async def disable(self, account_id: str, *, actor: Actor, origin: Origin, reason: str) -> int:
        """Stop the account logging in: its sessions end (as `end_sessions`) and its mailed
        links stop working, as `accounts disable` does. How many sessions ended."""
        async with self._act("helpdesk_disabled", account_id, actor, origin, reason) as act:
            if act.account["disabled"]:
                raise NotApplicable("disabled", "The account is disabled already.")
            services = self._services
            await services.accounts.set_disabled(act.id, True, conn=act.conn)
            ended = await services.registry.revoke_account(act.id, conn=act.conn, credentials=True)
            await services.links.void_all(act.conn, act.id)
            act.details["sessions"] = ended
        return ended

    async def enable(self, account_id: str, *, actor: Actor, origin: Origin, reason: str) -> None:
        """Let a disabled account log in again (never one merged away)."""
        async with self._act("helpdesk_enabled", account_id, actor, origin, reason) as act:
            if not act.account["disabled"]:
                raise NotApplicable("enabled", "The account is not disabled.")
            await self._services.accounts.set_disabled(act.id, False, conn=act.conn)

    async def correct_email(
        self,
        account_id: str,
        new_email: str,
        *,
        actor: Actor,
        origin: Origin,
        reason: str,
        lang: str = i18n.DEFAULT,
    ) -> None:
        """Set the address the patron's login mails go to, and tell the old and the new
        address. An address another account has is refused, and every link mailed so far
        stops working (it went to the old address)."""
        async with self._act("helpdesk_email_corrected", account_id, actor, origin, reason) as act:
            try:
                email = emails.check_email(new_email if isinstance(new_email, str) else "")
            except emails.EmailRejected as exc:
                raise EmailRejected(exc.code, str(exc)) from exc
            old = act.account["email"]
            if old == email:
                raise NotApplicable("unchanged", "The account has this address already.")
            services = self._services
            await services.accounts.set_email(act.id, email, conn=act.conn)
            await services.links.void_all(act.conn, act.id)
            notices = {canonical_email(email): (email, True)}
            if old:
                notices.setdefault(canonical_email(old), (old, False))
            for address, to_new_address in notices.values():
                await Outbox.put(
                    act.conn,
                    services.composer.compose(
                        "email_changed",
                        _language(lang),
                        address,
                        username=act.account["username"],
                        to_new_address=to_new_address,
                    ),
                    account_id=act.id,
                )
            act.details.update(old=old, new=email)


def _as_account(row: asyncpg.Record) -> Account:
    """The locked row as the mail composition takes an account (the helpdesk never reads a
    password hash, so none is there)."""
    return Account(
        row["id"], row["pass_number"], row["username"], row["email"], None, row["disabled"]
    )


HELPDESK = web.AppKey[Helpdesk]("auth.helpdesk")
