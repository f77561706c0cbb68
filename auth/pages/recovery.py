"""Forgotten password and forgotten username.

Both forms answer the same page, status and timing whether or not anything matched and
whether or not a limit held the mail back: the lookup, the limits on recovery mail
(`auth.credentials.mail_limits`: per account or mailbox, and per client address), the token
and the mail happen after the answer is sent, as background work, each outcome counted in
`gateway_recovery_mails_total` and, for an account that matched, written to its audit trail
(`password_reset_requested`; a request that matched nobody is on nobody's). Links in the
mails are built from GATEWAY_PUBLIC_URL, never from Host or X-Forwarded-*. A reset link is
single-use, expires, is bound to one account, and using it ends every session of the patron
without logging them in; GET only shows the form, because mail scanners open links.

Where the patron was going (`next`) travels through these pages, the mail and back to the
login; when that is a connected library's login, they wear its theme as the login does
(`auth.pages.login.client_theme`: from clients.yaml, never from a parameter).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import asyncpg
from aiohttp import web

from auth import urls
from auth.audit import Event, Origin, origin_of, patron
from auth.credentials import throttle
from auth.credentials.password_policy import PasswordRejected
from auth.mail import Outbox
from auth.pages import trail
from auth.pages.forms import read_checked_form
from auth.pages.i18n import translator
from auth.pages.login import client_theme
from auth.pages.redirects import safe_next
from auth.pages.render import language, message, render
from auth.services import SERVICES, AuthServices
from auth.store.accounts import Account
from auth.telemetry import RECOVERY_MAILS

log = logging.getLogger("auth.recovery")

Form = Literal["forgot_password", "forgot_username"]
# What became of one mail a form was asked for (a request that matched nobody: one no_match).
# A withheld mail gets the same answer as a sent one, and the account is never locked.
Outcome = Literal["sent", "limited_account", "limited_address", "no_match", "failed"]

_WITHHELD = {
    "limited_account": "recovery mail withheld: the account has had its mails for now",
    "limited_address": "recovery mail withheld: the client address has had its mails for now",
}


@dataclass(frozen=True)
class _Asked:
    """What the background work of a "forgot" form gets from the request."""

    value: str  # the identifier or e-mail address, as typed
    lang: str
    destination: str
    address: str  # the client, as the limits count it (`throttle.address_key`)
    origin: Origin  # the request, for the audit trail


def _counted(form: Form, outcome: Outcome, **extra: str) -> None:
    RECOVERY_MAILS.labels(form, outcome).inc()
    if outcome in _WITHHELD:
        log.info(_WITHHELD[outcome], extra={"form": form, **extra})


def _destination(value: str | None) -> str:
    """Where the patron was going when they came to the login (kept through the recovery
    pages and the reset link), or '' for nowhere in particular."""
    return safe_next(value, default="")


async def forgot_password_form(request: web.Request) -> web.Response:
    return await _form_page(request, "forgot_password.html")


async def _form_page(request: web.Request, template: str) -> web.Response:
    destination = _destination(request.query.get("next"))
    return await render(
        request, template, sent=False, next=destination, **client_theme(request, destination)
    )


async def _same_answer_always(
    request: web.Request,
    template: str,
    field: str,
    plausible: Callable[[str], bool],
    work: Callable[[AuthServices, _Asked], Coroutine[Any, Any, None]],
) -> web.Response:
    """The shape of both "forgot" forms: check the form, queue the lookup and the mail as
    work after the answer, and answer "sent" whatever the lookup will find."""
    form = await read_checked_form(request, (field, "next"))
    value = form[field].strip()
    destination = _destination(form["next"])
    themed = client_theme(request, destination)
    if not plausible(value) or len(value) > 320:
        t = translator(language(request))
        return await render(
            request,
            template,
            status=422,
            sent=False,
            error=t["error.required"],
            next=destination,
            **themed,
        )
    services = request.app[SERVICES]
    address = throttle.address_key(request.get(throttle.CLIENT_ADDRESS, "unknown"))
    asked = _Asked(value, language(request), destination, address, origin_of(request))
    services.after_response(work(services, asked))
    return await render(request, template, sent=True, next=destination, **themed)


async def forgot_password(request: web.Request) -> web.Response:
    return await _same_answer_always(
        request, "forgot_password.html", "identifier", bool, _send_reset
    )


async def _send_reset(services: AuthServices, asked: _Asked) -> None:
    try:
        matched = False
        for account in await _matching(services, asked.value):
            if not account.email or account.disabled:
                continue
            matched = True
            async with services.accounts.transaction() as conn:
                outcome = await _queue_reset(services, conn, account, account.email, asked)
                # Whoever asked is not logged in: the account is the one the form named.
                await services.audit.record(
                    Event(
                        "password_reset_requested",
                        patron(),
                        asked.origin,
                        account_id=account.id,
                        details={"outcome": outcome},
                    ),
                    conn=conn,
                )
            _counted("forgot_password", outcome, user_id=account.id, client=asked.address)
        if not matched:
            _counted("forgot_password", "no_match")
    except Exception:
        _counted("forgot_password", "failed")
        log.exception("could not prepare a reset mail")


async def _queue_reset(
    services: AuthServices, conn: asyncpg.Connection, account: Account, email: str, asked: _Asked
) -> Outcome:
    """A reset link for `account` queued in the caller's transaction, unless a limit holds it
    back. The address is checked first, as everywhere (see `mail_limits`)."""
    limits = services.mail_limits
    if await limits.address_spent(conn, asked.address):
        return "limited_address"
    token = await services.links.issue_limited(
        conn,
        account.id,
        "reset",
        services.reset_ttl,
        limit=limits.policy.per_account.mails,
        within=limits.policy.per_account.seconds,
    )
    if token is None:
        return "limited_account"
    await limits.sent(conn, asked.address)
    await queue_reset_mail(services, conn, account, email, token, asked.lang, asked.destination)
    return "sent"


async def queue_reset_mail(
    services: AuthServices,
    conn: asyncpg.Connection,
    account: Account,
    email: str,
    token: str,
    lang: str,
    destination: str = "",
) -> None:
    """The mail carrying reset link `token`, queued in the caller's transaction: one mail,
    whether the patron asked for it here or the helpdesk sent it (`auth.helpdesk`)."""
    link = f"{services.public_url}{urls.RESET_PASSWORD}?token={quote(token)}"
    if destination:
        link += f"&next={quote(destination, safe='')}"
    await Outbox.put(
        conn,
        services.composer.compose(
            "reset",
            lang,
            email,
            username=account.username,
            link=link,
            minutes=int(services.reset_ttl // 60),
        ),
        account_id=account.id,
    )


async def _matching(services: AuthServices, identifier: str) -> list[Account]:
    if "@" in identifier:
        return await services.accounts.by_email(identifier)
    account = await services.accounts.by_login_name(identifier)
    return [account] if account is not None else []


async def reset_form(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    token = request.query.get("token", "")
    account_id = await services.links.peek(token, "reset")
    account = await services.accounts.by_id(account_id) if account_id else None
    if account is None or account.disabled:
        return await _link_dead(request)
    destination = _destination(request.query.get("next"))
    return await render(
        request,
        "reset_password.html",
        token=token,
        username=account.username,
        next=destination,
        **client_theme(request, destination),
    )


async def _link_dead(request: web.Request) -> web.Response:
    return await message(
        request,
        410,
        "reset.invalid.title",
        "reset.invalid.text",
        link=urls.FORGOT_PASSWORD,
        link_key="forgot.title",
    )


async def reset(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    form = await read_checked_form(request, ("token", "new_password", "next"))
    token = form["token"]
    destination = _destination(form["next"])
    account_id = await services.links.peek(token, "reset")
    account = await services.accounts.by_id(account_id) if account_id else None
    if account is None or account.disabled:
        return await _link_dead(request)
    try:
        services.policy.check(
            form["new_password"], username=account.username, pass_number=account.pass_number
        )
    except PasswordRejected as exc:
        t = translator(language(request))
        return await render(
            request,
            "reset_password.html",
            status=422,
            token=token,
            username=account.username,
            error=t[f"error.password.{exc.code}"],
            next=destination,
            **client_theme(request, destination),
        )
    new_hash = await services.hasher.hash(form["new_password"])
    async with services.accounts.transaction() as conn:
        # Spending happens here, in the same transaction as the new password: of two
        # concurrent uses exactly one gets the row.
        spent_for = await services.links.spend(conn, token, "reset")
        if spent_for != account.id:
            return await _link_dead(request)
        await services.replace_password(conn, account, new_hash, lang=language(request), reset=True)
        await trail.record(request, "password_reset", account.id, account.username, conn=conn)
        # Whoever guessed at the old password is locked out by the new one; the patron,
        # who just proved they read the account's mail, need not wait out the block.
        await services.throttle.succeeded(throttle.account_key(account.id, ""), conn=conn)
    onward = f"&next={quote(destination, safe='')}" if destination else ""
    raise web.HTTPSeeOther(f"{urls.LOGIN}?notice=reset{onward}")


async def forgot_username_form(request: web.Request) -> web.Response:
    return await _form_page(request, "forgot_username.html")


async def forgot_username(request: web.Request) -> web.Response:
    return await _same_answer_always(
        request, "forgot_username.html", "email", lambda email: "@" in email, _send_usernames
    )


async def _send_usernames(services: AuthServices, asked: _Asked) -> None:
    try:
        accounts = [a for a in await services.accounts.by_email(asked.value) if not a.disabled]
        email = accounts[0].email if accounts else None
        if email is None:
            _counted("forgot_username", "no_match")
            return
        async with services.accounts.transaction() as conn:
            outcome = await _queue_usernames(services, conn, accounts, email, asked)
        _counted("forgot_username", outcome, client=asked.address)
    except Exception:
        _counted("forgot_username", "failed")
        log.exception("could not prepare a username mail")


async def _queue_usernames(
    services: AuthServices,
    conn: asyncpg.Connection,
    accounts: list[Account],
    email: str,
    asked: _Asked,
) -> Outcome:
    """One mail naming every account on `email`, queued in the caller's transaction unless a
    limit holds it back. The address is checked first, as everywhere (see `mail_limits`)."""
    limits = services.mail_limits
    if await limits.address_spent(conn, asked.address):
        return "limited_address"
    if await limits.mailbox_spent(conn, email):
        return "limited_account"
    await limits.sent(conn, asked.address, email)
    await Outbox.put(
        conn,
        services.composer.compose(
            "forgot_username",
            asked.lang,
            email,
            usernames=[account.username for account in accounts],
        ),
        # One mail for every account on the address: the helpdesk sees it with the account
        # when there is one, and with none of several (the outbox holds one account a mail).
        account_id=accounts[0].id if len(accounts) == 1 else None,
    )
    return "sent"


def add_routes(app: web.Application) -> None:
    app.router.add_get(urls.FORGOT_PASSWORD, forgot_password_form)
    app.router.add_post(urls.FORGOT_PASSWORD, forgot_password)
    app.router.add_get(urls.RESET_PASSWORD, reset_form)
    app.router.add_post(urls.RESET_PASSWORD, reset)
    app.router.add_get(urls.FORGOT_USERNAME, forgot_username_form)
    app.router.add_post(urls.FORGOT_USERNAME, forgot_username)
