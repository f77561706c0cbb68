"""Signing in to the console: e-mail and password, then always a second factor (a passkey,
a code from the TOTP app, or a one-time recovery code), and signing out.

The first step answers the same way, after the same argon2 work, for an unknown address, a
wrong password and a disabled member. A right password opens only the second step (a
session at stage `password`, good for `Lifetimes.pending`); the second factor makes a new,
signed-in session with a new token. Failures of either step count against the member and
the address (`auth.staff.attempts`; a try of the second factor is counted before it is
judged, so guesses sent all at once get no more turns than one at a time), and a block
refuses even the right answer (429). Each attempt on a real member's account is on the audit
trail.
"""

from __future__ import annotations

import time

from aiohttp import hdrs, web

from auth import urls
from auth.audit import Event
from auth.credentials.passwords import HasherBusy
from auth.credentials.throttle import CLIENT_ADDRESS, Blocked
from auth.staff import attempts, passkeys, recovery, totp, trail
from auth.staff.forms import read_checked
from auth.staff.guard import at_stage
from auth.staff.identity import SESSION, STAFF
from auth.staff.render import CLEAR_SESSION, page, set_session_cookie
from auth.staff.secrets import SecretUnreadable
from auth.staff.services import STAFF_SERVICES
from auth.staff.sessions import Stage
from auth.store.staff_sessions import StaffSession

MAX_EMAIL = 254
MAX_PASSWORD = 1024
MAX_CODE = 64
_NOTICES = {"signed_out": "staff.login.signed_out", "expired": "staff.login.expired"}


async def login_form(request: web.Request) -> web.StreamResponse:
    if STAFF in request:
        raise web.HTTPSeeOther(urls.STAFF_HOME)
    notice = _NOTICES.get(request.query.get("notice", ""))
    return await page(request, "login.html", email="", notice=notice)


async def login(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[STAFF_SERVICES]
    form = await read_checked(request, ("email", "password"))
    email, password = form["email"].strip(), form["password"]

    async def refused(status: int, error: str) -> web.Response:
        return await page(
            request, "login.html", status=status, email=email[:MAX_EMAIL], error=error
        )

    if not email or not password or len(email) > MAX_EMAIL or len(password) > MAX_PASSWORD:
        return await refused(401, "staff.login.failed")
    member = await services.members.by_email(email)
    usable = member is not None and not member.disabled and member.password_hash is not None
    key = attempts.member_key(member.id if member else None, email)
    if wait := await attempts.wait(request, key):
        response = await refused(429, "staff.login.throttled")
        response.headers["Retry-After"] = str(wait)
        return response
    try:
        verdict = await services.hasher.verify(
            member.password_hash if usable and member is not None else None, password
        )
    except HasherBusy:
        response = await refused(503, "staff.login.busy")
        response.headers["Retry-After"] = "5"
        return response
    if not verdict.ok or member is None or not usable:
        blocked = await attempts.failed(request, key)
        if member is not None:  # an address that is nobody's is on nobody's trail
            trail.record_after_answer(
                request, _failure_rows(request, member.id, member.email, blocked, step="password")
            )
        return await refused(401, "staff.login.failed")
    if verdict.new_hash is not None:
        await services.members.set_password_hash(
            member.id, verdict.new_hash, expected=member.password_hash
        )
    # A member who chose a password through their activation link but has no factor yet goes
    # on to enrol one; everybody else to their second factor.
    stage: Stage = "enrol" if member.activated_at is None else "password"
    if stage == "password" and not await services.factors.of(member.id):
        return await refused(403, "staff.login.no_factor")
    token = await services.sessions.create(
        member.id,
        stage,
        user_agent=request.headers.get(hdrs.USER_AGENT),
        remote=request.get(CLIENT_ADDRESS),
    )
    onward = web.HTTPSeeOther(urls.STAFF_SECURITY if stage == "enrol" else urls.STAFF_LOGIN_FACTOR)
    set_session_cookie(request, onward, token)
    raise onward


def _failure_rows(
    request: web.Request, staff_id: str, email: str, blocked: Blocked, **details: str
) -> list[Event]:
    by = trail.actor(staff_id, email)
    rows = [trail.event(request, "staff_login_failed", by=by, **details)]
    if blocked:
        rows.append(trail.event(request, "staff_login_blocked", by=by, **details))
    return rows


@at_stage("password")
async def factor_form(request: web.Request) -> web.StreamResponse:
    return await _factor_page(request)


async def _factor_page(
    request: web.Request, *, status: int = 200, error: str | None = None
) -> web.Response:
    """The second step: a passkey (a fresh challenge each time the page is shown), a TOTP
    code, or a recovery code; only the ways the member has set up are offered."""
    services = request.config_dict[STAFF_SERVICES]
    session = request[SESSION]
    keys = await services.factors.passkeys_of(session.staff_id)
    options = None
    if keys:
        options, challenge = passkeys.authentication_options(
            services.relying_party, [key.known for key in keys]
        )
        await services.sessions.set_challenge(session.id, challenge)
    has_totp = await services.factors.totp_of(session.staff_id) is not None
    return await page(
        request,
        "factor.html",
        status=status,
        error=error,
        passkey_options=options,
        has_totp=has_totp,
        script=options is not None,
    )


@at_stage("password")
async def factor(request: web.Request) -> web.StreamResponse:
    session = request[SESSION]
    form = await read_checked(request, ("method", "code"))
    method, code = form["method"], form["code"][:MAX_CODE]
    reserved = await _reserve(request, session)
    if reserved is None:
        return await _throttled(request, session)
    if method == "totp":
        if await _totp_accepted(request, session, code):
            return await _complete(request, session, "totp", reserved)
    elif method == "recovery":
        plain = recovery.normalised(code)
        if plain is not None:
            return await _complete(
                request,
                session,
                "recovery",
                reserved,
                code_hash=recovery.code_hash(session.staff_id, plain),
            )
    return await _second_step_failed(request, session, method, reserved)


async def _reserve(request: web.Request, session: StaffSession) -> Blocked | None:
    """This try of the second step, counted against the member before it is judged
    (`attempts.reserve`); None while the member or the address is blocked."""
    key = attempts.member_key(session.staff_id)
    if await attempts.wait(request, key):
        return None
    return await attempts.reserve(request, key)


async def _throttled(request: web.Request, session: StaffSession) -> web.Response:
    wait = await attempts.wait(request, attempts.member_key(session.staff_id))
    response = await _factor_page(request, status=429, error="staff.login.throttled")
    response.headers["Retry-After"] = str(max(wait, 1))
    return response


async def _totp_accepted(request: web.Request, session: StaffSession, code: str) -> bool:
    services = request.config_dict[STAFF_SERVICES]
    factor = await services.factors.totp_of(session.staff_id)
    if factor is None:
        return False
    try:
        secret = services.box.open(factor.sealed_secret)
        renewed = services.box.renew(factor.sealed_secret)
    except SecretUnreadable:
        return False
    step = totp.matching_step(secret, code, time.time(), factor.last_step)
    # The step is recorded only if it is newer than the last one accepted: a code replayed
    # within its own step (or racing its first use) changes nothing here and is refused.
    return step is not None and await services.factors.accept_totp(factor.id, step, renewed)


@at_stage("password")
async def passkey(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[STAFF_SERVICES]
    session = request[SESSION]
    form = await read_checked(request, ("credential",))
    reserved = await _reserve(request, session)
    if reserved is None:
        return await _throttled(request, session)
    # The challenge answers one attempt: taken (and so spent) whatever happens next.
    challenge = await services.sessions.take_challenge(session.id)
    if challenge is not None:
        try:
            wanted = passkeys.credential_id(form["credential"])
            for stored in await services.factors.passkeys_of(session.staff_id):
                if stored.credential_id != wanted:
                    continue
                count = passkeys.verify_authentication(
                    services.relying_party,
                    form["credential"],
                    challenge,
                    stored.public_key,
                    stored.sign_count,
                )
                if await services.factors.passkey_used(stored.id, stored.sign_count, count):
                    return await _complete(request, session, "passkey", reserved)
        except passkeys.PasskeyRefused:
            pass
    return await _second_step_failed(request, session, "passkey", reserved)


async def _second_step_failed(
    request: web.Request, session: StaffSession, method: str, reserved: Blocked
) -> web.Response:
    blocked = await attempts.failed_reserved(request, reserved)
    for row in _failure_rows(
        request, session.staff_id, session.email, blocked, step="second_factor", method=method[:20]
    ):
        await trail.record(request, row)
    return await _factor_page(request, status=401, error="staff.login.factor_failed")


async def _complete(
    request: web.Request,
    session: StaffSession,
    method: str,
    reserved: Blocked,
    *,
    code_hash: bytes | None = None,
) -> web.StreamResponse:
    """The second factor was right: the pending session ends and a signed-in one begins, with
    its row (and, for a recovery code, the code spent) in the same transaction."""
    services = request.config_dict[STAFF_SERVICES]
    by = trail.actor(session.staff_id, session.email)
    async with services.members.transaction() as conn:
        if code_hash is not None and not await services.factors.use_code(
            session.staff_id, code_hash, conn=conn
        ):
            token = None
        else:
            token = await services.sessions.advance(
                session,
                "full",
                user_agent=request.headers.get(hdrs.USER_AGENT),
                remote=request.get(CLIENT_ADDRESS),
                conn=conn,
            )
        if token is not None:
            await trail.record(
                request,
                trail.event(request, "staff_login_succeeded", by=by, method=method),
                conn=conn,
            )
            if code_hash is not None:
                await trail.record(
                    request, trail.event(request, "staff_recovery_code_used", by=by), conn=conn
                )
    if token is None:
        if code_hash is not None:
            return await _second_step_failed(request, session, method, reserved)
        request[CLEAR_SESSION] = True  # ended meanwhile (a second request got there first)
        raise web.HTTPSeeOther(f"{urls.STAFF_LOGIN}?notice=expired")
    await attempts.succeeded(request, attempts.member_key(session.staff_id))
    onward = web.HTTPSeeOther(
        f"{urls.STAFF_SECURITY}?notice=recovery_used" if code_hash is not None else urls.STAFF_HOME
    )
    set_session_cookie(request, onward, token)
    raise onward


@at_stage("password", "enrol", "full")
async def logout(request: web.Request) -> web.StreamResponse:
    services = request.config_dict[STAFF_SERVICES]
    session = request[SESSION]
    await read_checked(request, ())
    async with services.members.transaction() as conn:
        await services.sessions.end(session.id, conn=conn)
        if session.stage == "full":
            by = trail.actor(session.staff_id, session.email)
            await trail.record(request, trail.event(request, "staff_logout", by=by), conn=conn)
    request[CLEAR_SESSION] = True
    raise web.HTTPSeeOther(f"{urls.STAFF_LOGIN}?notice=signed_out")


def add_routes(console: web.Application) -> None:
    """The sign-in pages, on the console application (paths relative to /staff)."""
    for path, method, handler in (
        (urls.STAFF_LOGIN, "GET", login_form),
        (urls.STAFF_LOGIN, "POST", login),
        (urls.STAFF_LOGIN_FACTOR, "GET", factor_form),
        (urls.STAFF_LOGIN_FACTOR, "POST", factor),
        (urls.STAFF_LOGIN_PASSKEY, "POST", passkey),
        (urls.STAFF_LOGOUT, "POST", logout),
    ):
        console.router.add_route(method, path.removeprefix(urls.STAFF), handler)
