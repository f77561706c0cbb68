"""The patron's own login details: see them, change the username, change the password.

Both changes need the current password. A refused change answers with the page and the
reason: 403 for a wrong current password, 409 for a taken username, 422 for a rule broken.
A username from before today's character rules keeps logging in; the page asks its patron to
choose another, for as long as the rules (asked afresh at every visit) refuse it.
Every change mails a notice to the stored address (queued with the change itself); a password
change also ends every other session of the patron.

The page also lists where the patron is logged in (`auth.pages.sessions_list`), with a form
to end one other session and one to end all others: on every instance at once, and at every
connected library those sessions signed in to. A form naming a session that is not the
patron's (or none at all) ends nothing and gets the same answer.

It lists the patron's library passes too (`auth.pages.passes`), with the form to link a pass
of another library (`auth.pages.linking`, which answers with this page when it refuses), and
the patron's recent security events (`auth.pages.events_list`). Every change here writes its
row of the audit trail in the change's own transaction (`auth.pages.trail`).
"""

from __future__ import annotations

import math
import re
from urllib.parse import quote

from aiohttp import web
from aiohttp_session import get_session

from auth import urls
from auth.audit import patron
from auth.credentials import throttle
from auth.credentials.password_policy import PasswordRejected
from auth.credentials.passwords import HasherBusy
from auth.credentials.usernames import UsernameRejected, character_problem
from auth.identity import Identity
from auth.pages import events_list, passes, trail
from auth.pages.forms import read_checked_form
from auth.pages.i18n import translator
from auth.pages.render import language, render
from auth.pages.sessions_list import listing
from auth.services import INSTITUTIONS, SERVICES
from auth.store.accounts import Account, UsernameTaken

_HANDLE = re.compile(r"[0-9a-f]{64}")


async def _current(request: web.Request) -> tuple[Identity, Account]:
    services = request.app[SERVICES]
    identity = await services.authenticator.identify(request)
    account = await services.accounts.by_id(identity.user_id) if identity else None
    if identity is None or account is None:
        raise web.HTTPFound(f"{urls.LOGIN}?next={quote(urls.ACCOUNT, safe='')}")
    return identity, account


async def _page(
    request: web.Request, account: Account, *, status: int = 200, **context: object
) -> web.Response:
    services = request.app[SERVICES]
    identity = await services.authenticator.identify(request)
    return await render(
        request,
        "account.html",
        status=status,
        account=account,
        sessions=await listing(request, identity) if identity is not None else [],
        personal_data_url=services.personal_data_url,
        new_username=context.pop("new_username", ""),
        outdated_username=_outdated_username(account, identity, language(request)),
        passes=passes.listing(request, identity),
        events=await events_list.listing(request, account.id),
        institutions=request.app[INSTITUTIONS].table.institutions,
        link_institution=context.pop("link_institution", ""),
        link_pass_number=context.pop("link_pass_number", ""),
        **context,
    )


# The pass-linking form (auth.pages.linking) is on this page: it finds the patron and answers
# with the page as the forms here do.
current_patron = _current
account_page_with = _page


def _pass_numbers(identity: Identity | None) -> tuple[str, ...]:
    """Every pass number the patron holds (the first, and those linked from other libraries
    by `auth.pages.linking`): each is theirs to use as a username."""
    return tuple(m.pass_number for m in identity.memberships) if identity is not None else ()


def _outdated_username(account: Account, identity: Identity | None, lang: str) -> str | None:
    """What to tell a patron whose username the character rules refuse today, or None."""
    problem = character_problem(
        account.username, own_pass_number=(account.pass_number, *_pass_numbers(identity))
    )
    if problem is None:
        return None
    t = translator(lang)
    if problem.characters:
        return t["account.outdated_username.characters"].format(characters=problem.characters)
    return t["account.outdated_username.rule"].format(rule=t[f"error.username.{problem.code}"])


async def account_page(request: web.Request) -> web.Response:
    _, account = await _current(request)
    session = await get_session(request)
    notice = session.pop("notice", None)
    return await _page(request, account, notice=notice if isinstance(notice, str) else None)


async def change_username(request: web.Request) -> web.StreamResponse:
    identity, account = await _current(request)
    services = request.app[SERVICES]
    form = await read_checked_form(request, ("new_username", "password"))
    t = translator(language(request))
    wanted = form["new_username"].strip()

    async def refuse(status: int, field: str, key: str) -> web.Response:
        return await _page(
            request, account, status=status, new_username=wanted[:64], errors={field: t[key]}
        )

    if not await _password_ok(request, account, form["password"]):
        return await refuse(403, "password", "error.wrong_password")
    try:
        username = services.username_for(account, wanted, _pass_numbers(identity))
    except UsernameRejected as exc:
        return await refuse(422, "new_username", f"error.username.{exc.code}")
    try:
        async with services.accounts.transaction() as conn:
            await services.accounts.set_username(account.id, username, conn=conn)
            await trail.record(
                request,
                "username_changed",
                account.id,
                account.username,
                conn=conn,
                old=account.username,
                new=username,
            )
    except UsernameTaken:
        return await refuse(409, "new_username", "error.username_taken")
    await services.registry.account_changed(account.id)
    if account.email:
        await services.outbox.send(
            services.composer.compose(
                "username_changed",
                language(request),
                account.email,
                username=username,
                old_username=account.username,
            ),
            account_id=account.id,
        )
    (await get_session(request))["notice"] = "account.saved.username"
    raise web.HTTPSeeOther(urls.ACCOUNT)


async def change_password(request: web.Request) -> web.StreamResponse:
    _, account = await _current(request)
    services = request.app[SERVICES]
    form = await read_checked_form(request, ("current_password", "new_password"))
    t = translator(language(request))

    async def refuse(status: int, field: str, key: str) -> web.Response:
        return await _page(request, account, status=status, errors={field: t[key]})

    if not await _password_ok(request, account, form["current_password"]):
        return await refuse(403, "current_password", "error.wrong_password")
    try:
        services.policy.check(
            form["new_password"], username=account.username, pass_number=account.pass_number
        )
    except PasswordRejected as exc:
        return await refuse(422, "new_password", f"error.password.{exc.code}")
    new_hash = await services.hasher.hash(form["new_password"])
    session = await get_session(request)
    sid = session.get("sid")
    async with services.accounts.transaction() as conn:
        await services.replace_password(
            conn,
            account,
            new_hash,
            lang=language(request),
            reset=False,
            keep_sid=sid if isinstance(sid, str) else None,
        )
        await trail.record(request, "password_changed", account.id, account.username, conn=conn)
    session["notice"] = "account.saved.password"
    raise web.HTTPSeeOther(urls.ACCOUNT)


async def end_session(request: web.Request) -> web.StreamResponse:
    """End one of the patron's other sessions, named by its handle (`session`)."""
    identity, account = await _current(request)
    form = await read_checked_form(request, ("session",))
    handle = form["session"]
    # The patron's own session is ended by logging out, not here.
    if _HANDLE.fullmatch(handle) and handle != identity.session:
        services = request.app[SERVICES]
        async with services.accounts.transaction() as conn:
            ended = await services.registry.revoke_hashed(
                bytes.fromhex(handle), account_id=account.id, conn=conn
            )
            if ended:
                await trail.record(
                    request, "session_ended", account.id, account.username, conn=conn
                )
    (await get_session(request))["notice"] = "sessions.ended"
    raise web.HTTPSeeOther(urls.ACCOUNT)


async def end_other_sessions(request: web.Request) -> web.StreamResponse:
    """End every session of the patron but this one; their offline grants at connected
    libraries stay (only a new password or a disabled account ends those)."""
    _, account = await _current(request)
    await read_checked_form(request, ())
    session = await get_session(request)
    sid = session.get("sid")
    if isinstance(sid, str):
        services = request.app[SERVICES]
        async with services.accounts.transaction() as conn:
            ended = await services.registry.revoke_account(
                account.id, keep_sid=sid, credentials=False, conn=conn
            )
            if ended:
                await trail.record(
                    request, "sessions_ended", account.id, account.username, conn=conn, count=ended
                )
    session["notice"] = "sessions.ended_others"
    raise web.HTTPSeeOther(urls.ACCOUNT)


async def _password_ok(request: web.Request, account: Account, password: str) -> bool:
    """Check the current password, under the same brute-force limits as the login form
    (somebody at an unlocked computer must not be able to guess it here instead)."""
    services = request.app[SERVICES]
    account_key = throttle.account_key(account.id, "")
    address_key = throttle.address_key(request.get(throttle.CLIENT_ADDRESS, "unknown"))
    wait = await services.throttle.retry_after(account_key, address_key)
    if wait > 0:
        raise web.HTTPTooManyRequests(
            headers={"Retry-After": str(math.ceil(wait))},
            text="Too many attempts. Please wait a moment.",
        )
    ok = False
    if password and len(password) <= 1024:
        try:
            ok = (await services.hasher.verify(account.password_hash, password)).ok
        except HasherBusy:
            raise web.HTTPServiceUnavailable(headers={"Retry-After": "5"}) from None
    if not ok:
        blocked = await services.throttle.failed(account_key, address_key)
        # The patron's own account, logged in: its timing hides nothing, but one path for
        # every wrong password keeps the rows alike.
        trail.record_after_answer(
            request,
            trail.failed_attempt(
                request,
                account.id,
                blocked,
                form="account",
                actor=patron(account.id, account.username),
            ),
        )
    return ok


def add_routes(app: web.Application) -> None:
    app.router.add_get(urls.ACCOUNT, account_page)
    app.router.add_post(urls.ACCOUNT_USERNAME, change_username)
    app.router.add_post(urls.ACCOUNT_PASSWORD, change_password)
    app.router.add_post(urls.ACCOUNT_SESSIONS_END, end_session)
    app.router.add_post(urls.ACCOUNT_SESSIONS_END_OTHERS, end_other_sessions)
