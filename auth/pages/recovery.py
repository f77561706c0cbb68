"""Forgotten password and forgotten username.

Both forms answer the same page, status and timing whether or not anything matched: the
lookup, the token and the mail happen after the answer is sent, as background work. Links in
the mails are built from GATEWAY_PUBLIC_URL, never from Host or X-Forwarded-*. A reset link
is single-use, expires, is bound to one account, and using it ends every session of the
patron without logging them in; GET only shows the form, because mail scanners open links.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from aiohttp import web

from auth import urls
from auth.credentials import throttle
from auth.credentials.password_policy import PasswordRejected
from auth.mail import Outbox
from auth.pages.forms import read_checked_form
from auth.pages.i18n import translator
from auth.pages.redirects import safe_next
from auth.pages.render import language, message, render
from auth.services import SERVICES, AuthServices
from auth.store.accounts import Account

log = logging.getLogger("auth.recovery")

# At most this many reset mails per account per window; more requests get the same answer
# but no mail, so nobody can flood a patron's inbox (and the account is never locked).
RESET_MAILS_PER_WINDOW = 3
RESET_WINDOW = 900.0


def _destination(value: str | None) -> str:
    """Where the patron was going when they came to the login (kept through the recovery
    pages and the reset link), or '' for nowhere in particular."""
    return safe_next(value, default="")


async def forgot_password_form(request: web.Request) -> web.Response:
    return await render(
        request, "forgot_password.html", sent=False, next=_destination(request.query.get("next"))
    )


async def _same_answer_always(
    request: web.Request,
    template: str,
    field: str,
    plausible: Callable[[str], bool],
    work: Callable[[AuthServices, str, str, str], Coroutine[Any, Any, None]],
) -> web.Response:
    """The shape of both "forgot" forms: check the form, queue the lookup and the mail as
    work after the answer, and answer "sent" whatever the lookup will find."""
    form = await read_checked_form(request, (field, "next"))
    value = form[field].strip()
    destination = _destination(form["next"])
    if not plausible(value) or len(value) > 320:
        t = translator(language(request))
        return await render(
            request, template, status=422, sent=False, error=t["error.required"], next=destination
        )
    services = request.app[SERVICES]
    services.after_response(work(services, value, language(request), destination))
    return await render(request, template, sent=True, next=destination)


async def forgot_password(request: web.Request) -> web.Response:
    return await _same_answer_always(
        request, "forgot_password.html", "identifier", bool, _send_reset
    )


async def _send_reset(services: AuthServices, identifier: str, lang: str, destination: str) -> None:
    try:
        accounts = await _matching(services, identifier)
        for account in accounts:
            if not account.email or account.disabled:
                continue
            async with services.accounts.transaction() as conn:
                token = await services.links.issue_limited(
                    conn,
                    account.id,
                    "reset",
                    services.reset_ttl,
                    limit=RESET_MAILS_PER_WINDOW,
                    within=RESET_WINDOW,
                )
                if token is None:
                    log.info(
                        "reset mail withheld: too many requests for one account",
                        extra={"user_id": account.id},
                    )
                    continue
                link = f"{services.public_url}{urls.RESET_PASSWORD}?token={quote(token)}"
                if destination:
                    link += f"&next={quote(destination, safe='')}"
                await Outbox.put(
                    conn,
                    services.composer.compose(
                        "reset",
                        lang,
                        account.email,
                        username=account.username,
                        link=link,
                        minutes=int(services.reset_ttl // 60),
                    ),
                )
    except Exception:
        log.exception("could not prepare a reset mail")


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
    return await render(
        request,
        "reset_password.html",
        token=token,
        username=account.username,
        next=_destination(request.query.get("next")),
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
        )
    new_hash = await services.hasher.hash(form["new_password"])
    async with services.accounts.transaction() as conn:
        # Spending happens here, in the same transaction as the new password: of two
        # concurrent uses exactly one gets the row.
        spent_for = await services.links.spend(conn, token, "reset")
        if spent_for != account.id:
            return await _link_dead(request)
        await services.replace_password(conn, account, new_hash, lang=language(request), reset=True)
        # Whoever guessed at the old password is locked out by the new one; the patron,
        # who just proved they read the account's mail, need not wait out the block.
        await services.throttle.succeeded(throttle.account_key(account.id, ""), conn=conn)
    onward = f"&next={quote(destination, safe='')}" if destination else ""
    raise web.HTTPSeeOther(f"{urls.LOGIN}?notice=reset{onward}")


async def forgot_username_form(request: web.Request) -> web.Response:
    return await render(
        request, "forgot_username.html", sent=False, next=_destination(request.query.get("next"))
    )


async def forgot_username(request: web.Request) -> web.Response:
    return await _same_answer_always(
        request, "forgot_username.html", "email", lambda email: "@" in email, _send_usernames
    )


async def _send_usernames(services: AuthServices, email: str, lang: str, _next: str) -> None:
    try:
        accounts = [a for a in await services.accounts.by_email(email) if not a.disabled]
        if not accounts or accounts[0].email is None:
            return
        await services.outbox.send(
            services.composer.compose(
                "forgot_username",
                lang,
                accounts[0].email,
                usernames=[account.username for account in accounts],
            )
        )
    except Exception:
        log.exception("could not prepare a username mail")


def add_routes(app: web.Application) -> None:
    app.router.add_get(urls.FORGOT_PASSWORD, forgot_password_form)
    app.router.add_post(urls.FORGOT_PASSWORD, forgot_password)
    app.router.add_get(urls.RESET_PASSWORD, reset_form)
    app.router.add_post(urls.RESET_PASSWORD, reset)
    app.router.add_get(urls.FORGOT_USERNAME, forgot_username_form)
    app.router.add_post(urls.FORGOT_USERNAME, forgot_username)
