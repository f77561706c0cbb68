"""Enrolling a second factor: a TOTP app (a QR code to scan, and the secret as text to
type) or a passkey (the browser's WebAuthn ceremony, the console's one script).

Reached by a new member right after choosing their password (session stage `enrol`), and
from "my security" by a signed-in member (who gives their password again). The secret being
enrolled, and the passkey ceremony's challenge, wait on the session's row; a TOTP app counts
as enrolled only once it has produced a right code. A new member's first factor activates
the account: the recovery codes are shown, once, and the session becomes a signed-in one
with a new token.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import hdrs, web

from auth import urls
from auth.credentials.throttle import CLIENT_ADDRESS
from auth.pages.i18n import translator
from auth.pages.render import language
from auth.staff import passkeys, totp, trail
from auth.staff.forms import read_checked
from auth.staff.guard import at_stage
from auth.staff.identity import SESSION
from auth.staff.render import CLEAR_SESSION, page, refusal, set_session_cookie
from auth.staff.secrets import SecretUnreadable
from auth.staff.security import Refused, confirm_password, issue_codes
from auth.staff.services import STAFF_SERVICES
from auth.store.staff_factors import CredentialTaken, TotpExists

MAX_NAME = 60


def _name(request: web.Request, typed: str, default_key: str) -> str:
    name = " ".join(typed.split())[:MAX_NAME]
    return name or translator(language(request))[default_key]


# --- a TOTP app ---------------------------------------------------------------------------


@at_stage("enrol", "full")
async def totp_form(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[STAFF_SERVICES]
    session = request[SESSION]
    if await services.factors.totp_of(session.staff_id) is not None:
        raise web.HTTPSeeOther(f"{urls.STAFF_SECURITY}?notice=has_totp")
    return await _totp_page(request)


async def _totp_page(request: web.Request, *, status: int = 200, **context: Any) -> web.Response:
    """The QR code and the secret; the same secret until it is enrolled (a reload shows the
    code the app has already scanned)."""
    services = request.config_dict[STAFF_SERVICES]
    session = request[SESSION]
    sealed = await services.sessions.pending_totp(session.id)
    try:
        secret = services.box.open(sealed) if sealed is not None else None
    except SecretUnreadable:
        secret = None
    if secret is None:
        secret = totp.new_secret()
        await services.sessions.set_pending_totp(session.id, services.box.seal(secret))
    uri = totp.provisioning_uri(secret, session.email, services.issuer)
    context.setdefault("name", "")
    return await page(
        request,
        "totp.html",
        status=status,
        qr=totp.qr_svg(uri),
        secret=" ".join(secret[i : i + 4] for i in range(0, len(secret), 4)),
        enrolling=session.stage == "enrol",
        **context,
    )


@at_stage("enrol", "full")
async def totp_add(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[STAFF_SERVICES]
    session = request[SESSION]
    form = await read_checked(request, ("code", "name", "password"))
    name = _name(request, form["name"], "staff.enrol.totp_default_name")
    if session.stage == "full":
        try:
            await confirm_password(request, form["password"])
        except Refused as refused:
            return await _totp_page(request, status=refused.status, error=refused.error, name=name)
    sealed = await services.sessions.pending_totp(session.id)
    try:
        secret = services.box.open(sealed) if sealed is not None else None
    except SecretUnreadable:
        secret = None
    step = totp.matching_step(secret, form["code"][:64], time.time(), None) if secret else None
    if secret is None or step is None:
        t = translator(language(request))
        return await _totp_page(
            request, status=422, errors={"code": t["staff.enrol.totp_wrong"]}, name=name
        )

    async def insert(conn: Any) -> None:
        await services.factors.add_totp(
            session.staff_id, services.box.seal(secret), step, name, conn=conn
        )
        await services.sessions.clear_pending_totp(session.id, conn=conn)

    try:
        return await _enrolled(request, insert, kind="totp", name=name)
    except TotpExists:
        raise web.HTTPSeeOther(f"{urls.STAFF_SECURITY}?notice=has_totp") from None


# --- a passkey ----------------------------------------------------------------------------


@at_stage("enrol", "full")
async def passkey_form(request: web.Request) -> web.StreamResponse:
    await _refuse_without_domain(request)
    return await _passkey_page(request)


async def _refuse_without_domain(request: web.Request) -> None:
    if not request.config_dict[STAFF_SERVICES].relying_party.usable:
        raise await refusal(
            request,
            web.HTTPConflict,
            "staff.passkey.no_domain.title",
            "staff.passkey.no_domain.text",
        )


async def _passkey_page(request: web.Request, *, status: int = 200, **context: Any) -> web.Response:
    """The ceremony's options, with a fresh challenge each time the page is shown."""
    services = request.config_dict[STAFF_SERVICES]
    session = request[SESSION]
    existing = await services.factors.passkeys_of(session.staff_id)
    options, challenge = passkeys.registration_options(
        services.relying_party,
        passkeys.user_handle(session.staff_id),
        session.email,
        [key.known for key in existing],
    )
    await services.sessions.set_challenge(session.id, challenge)
    context.setdefault("name", "")
    return await page(
        request,
        "passkey.html",
        status=status,
        script=True,
        options=options,
        enrolling=session.stage == "enrol",
        **context,
    )


@at_stage("enrol", "full")
async def passkey_add(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[STAFF_SERVICES]
    session = request[SESSION]
    form = await read_checked(request, ("credential", "name", "password"))
    await _refuse_without_domain(request)
    name = _name(request, form["name"], "staff.enrol.passkey_default_name")
    # The challenge answers one attempt: taken (and so spent) whatever happens next.
    challenge = await services.sessions.take_challenge(session.id)
    if session.stage == "full":
        try:
            await confirm_password(request, form["password"])
        except Refused as refused:
            return await _passkey_page(
                request, status=refused.status, error=refused.error, name=name
            )
    try:
        if challenge is None:
            raise passkeys.PasskeyRefused("no challenge")
        key = passkeys.verify_registration(services.relying_party, form["credential"], challenge)
    except passkeys.PasskeyRefused:
        return await _passkey_page(
            request, status=422, error="staff.enrol.passkey_failed", name=name
        )

    async def insert(conn: Any) -> None:
        await services.factors.add_passkey(session.staff_id, key, name, conn=conn)

    try:
        return await _enrolled(request, insert, kind="passkey", name=name)
    except CredentialTaken:
        return await _passkey_page(
            request, status=409, error="staff.enrol.passkey_known", name=name
        )


# --- both ---------------------------------------------------------------------------------


class _Ended(Exception):
    """The session ended while its enrolment was being stored, or the member was activated
    meanwhile (by an enrolment in another browser): an enrolment stage is for a member with
    no factor yet, never a way round the factor they have now."""


async def _enrolled(
    request: web.Request, insert: Callable[[Any], Awaitable[None]], *, kind: str, name: str
) -> web.StreamResponse:
    """Store the factor with its row; for a new member also activate the account, make
    their recovery codes and sign them in, all in one transaction."""
    services = request.config_dict[STAFF_SERVICES]
    session = request[SESSION]
    by = trail.actor(session.staff_id, session.email)
    token = codes = None
    try:
        async with services.members.transaction() as conn:
            await insert(conn)
            await trail.record(
                request,
                trail.event(request, "staff_factor_added", by=by, kind=kind, name=name),
                conn=conn,
            )
            if session.stage == "enrol":
                token = await services.sessions.advance(
                    session,
                    "full",
                    user_agent=request.headers.get(hdrs.USER_AGENT),
                    remote=request.get(CLIENT_ADDRESS),
                    conn=conn,
                )
                if token is None:  # ended meanwhile: nothing of this may stay
                    raise _Ended
                if not await services.members.mark_activated(session.staff_id, conn=conn):
                    raise _Ended
                codes = await issue_codes(
                    request, session.staff_id, session.email, "staff_activated", conn=conn
                )
    except _Ended:
        await services.sessions.end(session.id)  # its successor was rolled back with the rest
        request[CLEAR_SESSION] = True
        raise web.HTTPSeeOther(f"{urls.STAFF_LOGIN}?notice=expired") from None
    if token is None or codes is None:
        raise web.HTTPSeeOther(f"{urls.STAFF_SECURITY}?notice=factor_added")
    response = web.Response()
    set_session_cookie(request, response, token)
    return await page(request, "codes.html", response=response, codes=codes, activated=True)


def add_routes(console: web.Application) -> None:
    for path, method, handler in (
        (urls.STAFF_SECURITY_TOTP, "GET", totp_form),
        (urls.STAFF_SECURITY_TOTP, "POST", totp_add),
        (urls.STAFF_SECURITY_PASSKEY, "GET", passkey_form),
        (urls.STAFF_SECURITY_PASSKEY, "POST", passkey_add),
    ):
        console.router.add_route(method, path.removeprefix(urls.STAFF), handler)
