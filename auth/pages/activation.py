"""New members: an invitation by mail, and the page where they choose username and password.

`invite` makes the account (without a password, username = pass number) and mails a link;
the link is single-use and expires (default 7 days). Inviting again at another address voids
every link mailed to the old one. On the page the member keeps the pass
number as username or picks their own, under the same rules as a username change.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from auth import urls
from auth.audit import SYSTEM, Actor, Event
from auth.credentials.password_policy import PasswordRejected
from auth.credentials.usernames import UsernameRejected
from auth.mail import Composer, Outbox
from auth.pages import trail
from auth.pages.forms import read_checked_form
from auth.pages.i18n import translator
from auth.pages.render import language, message, render
from auth.services import SERVICES
from auth.store.accounts import Account, Accounts, PassNumberTaken, UsernameTaken
from auth.store.audit import AuditTrail
from auth.store.links import Links


class AlreadyActive(Exception):
    """The pass number belongs to an account that has a password already."""


@dataclass(frozen=True)
class Invitations:
    accounts: Accounts
    links: Links
    composer: Composer
    public_url: str
    ttl: float
    audit: AuditTrail | None = None
    """Where the invitation's rows go (an account made, an address changed); None: nowhere."""

    async def send(
        self,
        pass_number: str,
        email: str,
        lang: str = "nl",
        *,
        actor: Actor = SYSTEM,
        details: dict[str, Any] | None = None,
    ) -> str:
        """Create (or find, if not yet activated) the account and queue its activation
        mail, with the rows (and their `details`) of what `actor` changed. Returns the
        account id."""
        account = await self.accounts.by_login_name(pass_number)
        if account is not None and account.pass_number != pass_number:
            account = None  # matched somebody's username, not this pass number
        if account is not None and account.password_hash:
            raise AlreadyActive(pass_number)
        rows: list[Event] = []
        facts = details or {}
        async with self.accounts.transaction() as conn:
            if account is None:
                try:
                    account = await self.accounts.add(
                        pass_number=pass_number, email=email, conn=conn
                    )
                except (PassNumberTaken, UsernameTaken):
                    raise AlreadyActive(pass_number) from None
                rows.append(
                    Event("operator_account_added", actor, account_id=account.id, details=facts)
                )
            elif account.email != email:
                await self.accounts.set_email(account.id, email, conn=conn)
                # Links mailed to the old address (an invitation, a reset) would let whoever
                # reads it there take the account over: only the new address's link works.
                await self.links.void_all(conn, account.id)
                rows.append(Event("email_changed", actor, account_id=account.id, details=facts))
            await self.queue_mail(conn, account.id, pass_number, email, lang)
            if self.audit is not None and rows:
                await self.audit.record_all(rows, conn=conn)
        return account.id

    async def queue_mail(
        self, conn: Any, account_id: str, pass_number: str, email: str, lang: str
    ) -> None:
        """A fresh activation link and its mail, queued in the caller's transaction: the
        same mail for an invitation and for the helpdesk resending it (`auth.helpdesk`)."""
        token = await self.links.issue(account_id, "activate", self.ttl, conn=conn)
        link = f"{self.public_url}{urls.ACTIVATE}?token={quote(token)}"
        await Outbox.put(
            conn,
            self.composer.compose(
                "activate",
                lang,
                email,
                pass_number=pass_number,
                link=link,
                days=max(1, int(self.ttl // 86400)),
            ),
            account_id=account_id,
        )


async def _live(request: web.Request, token: str) -> Account | None:
    services = request.app[SERVICES]
    account_id = await services.links.peek(token, "activate")
    account = await services.accounts.by_id(account_id) if account_id else None
    # A disabled account is activated by nobody, whatever link it was sent (disabling voids
    # those mailed before; an invitation sent again after it mails a new one).
    if account is None or account.password_hash or account.disabled:
        return None
    return account


async def _dead(request: web.Request) -> web.Response:
    return await message(
        request,
        410,
        "activate.invalid.title",
        "activate.invalid.text",
        link=urls.LOGIN,
        link_key="back_to_login",
    )


async def activate_form(request: web.Request) -> web.Response:
    token = request.query.get("token", "")
    account = await _live(request, token)
    if account is None:
        return await _dead(request)
    return await render(request, "activate.html", token=token, username=account.pass_number)


async def activate(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    form = await read_checked_form(request, ("token", "username", "password"))
    token = form["token"]
    account = await _live(request, token)
    if account is None:
        return await _dead(request)
    t = translator(language(request))
    wanted = form["username"].strip() or account.pass_number

    async def refuse(status: int, field: str, key: str) -> web.Response:
        return await render(
            request,
            "activate.html",
            status=status,
            token=token,
            username=wanted[:64],
            errors={field: t[key]},
        )

    try:
        username = services.username_for(account, wanted)
    except UsernameRejected as exc:
        return await refuse(422, "username", f"error.username.{exc.code}")
    try:
        services.policy.check(form["password"], username=username, pass_number=account.pass_number)
    except PasswordRejected as exc:
        return await refuse(422, "password", f"error.password.{exc.code}")
    new_hash = await services.hasher.hash(form["password"])
    try:
        async with services.accounts.transaction() as conn:
            if await services.links.spend(conn, token, "activate") != account.id:
                return await _dead(request)
            if username != account.username:
                await services.accounts.set_username(account.id, username, conn=conn)
            await services.accounts.set_password_hash(account.id, new_hash, conn=conn)
            await trail.record(request, "account_activated", account.id, username, conn=conn)
    except UsernameTaken:
        return await refuse(409, "username", "error.username_taken")
    raise web.HTTPSeeOther(f"{urls.LOGIN}?notice=activated")


def add_routes(app: web.Application) -> None:
    app.router.add_get(urls.ACTIVATE, activate_form)
    app.router.add_post(urls.ACTIVATE, activate)
