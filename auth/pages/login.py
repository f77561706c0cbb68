"""Logging in and out: the two pages every patron meets.

A failed login looks the same whatever failed (unknown name, wrong password, disabled account):
same status, same page, and the same argon2 work, done in the hasher's thread pool. A
successful login always starts a brand-new session (no fixation) and goes to `next` only if it
is a local path. The session records the browser it started in (its User-Agent), for the
patron's list of sessions; with `GATEWAY_SIGNIN_NOTICES` on, a login from a browser that has
never logged in to the account before (no device cookie vouches for it) is mailed to the
patron. After a logout the login page says, once, that it worked.

Each login is on the patron's audit trail (`auth.pages.trail`): a success costs the login one
INSERT after its session's, without a transaction of its own (should it fail, the answer is an
error and the session, whose id nobody was given, is never used); a wrong password for an
existing account is written as work the answer does not wait for, and an unknown name not at
all.
"""

from __future__ import annotations

import math
import time
from typing import Any

from aiohttp import hdrs, web
from aiohttp_session import get_session, new_session

from auth import urls
from auth.credentials import devices, passwords, throttle
from auth.credentials.passwords import HasherBusy
from auth.credentials.usernames import canonical
from auth.oidc.clients import Client
from auth.oidc.provider import PROVIDER
from auth.pages import csrf, trail
from auth.pages.forms import read_checked_form
from auth.pages.redirects import safe_next
from auth.pages.render import FORM_TARGETS, render
from auth.pages.sessions_list import send_signin_notice
from auth.services import SERVICES
from auth.sessions.authenticator import IDENTITY
from auth.store.accounts import Account
from auth.telemetry import LOGINS

MAX_LOGIN_NAME = 256
MAX_PASSWORD = 1024


_NOTICES = {"reset": "login.notice.reset", "activated": "login.notice.activated"}
# Set by a logout on its way to the login page, which then says "you are logged out" once.
# A cookie and not the URL: the logout goes to the bare login page, no link can make that
# page say it, and the cookie holds no text (only the page's own words are ever shown).
LOGGED_OUT_COOKIE = "library_logged_out"


async def login_form(request: web.Request) -> web.Response:
    next_path = safe_next(request.query.get("next"))
    context = {"username": "", **_for_client(request, next_path)}
    logged_out = LOGGED_OUT_COOKIE in request.cookies
    notice = _NOTICES.get(request.query.get("notice", ""))
    if notice is None and logged_out and await _anonymous(request):
        notice = "login.notice.logged_out"
    response = await render(request, "login.html", next=next_path, notice=notice, **context)
    if logged_out:
        response.del_cookie(LOGGED_OUT_COOKIE, **_logged_out_flags(request))
    return response


async def _anonymous(request: web.Request) -> bool:
    return await request.app[SERVICES].authenticator.identify(request) is None


def _logged_out_flags(request: web.Request) -> dict[str, Any]:
    """Sent only to the login page, only from this site's own pages (a logout)."""
    secure = request.app[SERVICES].public_url.startswith("https://")
    return {"path": urls.LOGIN, "secure": secure, "httponly": True, "samesite": "Strict"}


def _client_of(request: web.Request, next_path: str) -> tuple[Client, dict[str, str]] | None:
    provider = request.app.get(PROVIDER)
    return provider.client_of_login(next_path) if provider is not None else None


def client_theme(request: web.Request, next_path: str) -> dict[str, Any]:
    """The theme for a page on the way to a connected library's login (the recovery pages
    carry the same `next` as the login): that client's, from clients.yaml only, or nothing
    (the library's own)."""
    found = _client_of(request, next_path)
    if found is None or found[0].theme is None:
        return {}
    return {"theme": found[0].theme}


def _for_client(request: web.Request, next_path: str) -> dict[str, Any]:
    """The login page opened for a connected library (its `next` is the provider's
    authorization endpoint): that client's name and theme, from clients.yaml only, and the
    username it suggested (`login_hint`)."""
    found = _client_of(request, next_path)
    if found is None:
        return {}
    client, params = found
    request[FORM_TARGETS] = client.redirect_uris
    context: dict[str, Any] = {"client_name": client.name}
    if client.theme is not None:
        context["theme"] = client.theme
    hint = params.get("login_hint", "")
    if hint and len(hint) <= MAX_LOGIN_NAME:
        context["username"] = hint
    return context


async def login(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    form = await read_checked_form(request, ("username", "password", "next"))
    next_path = safe_next(form["next"])
    name, password = form["username"].strip(), form["password"]

    async def failed(status: int, error: str) -> web.Response:
        return await render(
            request,
            "login.html",
            status=status,
            next=next_path,
            error=error,
            **{**_for_client(request, next_path), "username": name[:MAX_LOGIN_NAME]},
        )

    if not name or not password or len(name) > MAX_LOGIN_NAME or len(password) > MAX_PASSWORD:
        return await failed(401, "login.failed")
    account = await services.accounts.by_login_name(name)
    usable = account is not None and not account.disabled and account.password_hash
    account_key = throttle.account_key(account.id if account else None, canonical(name))
    address_key = throttle.address_key(request.get(throttle.CLIENT_ADDRESS, "unknown"))
    # A browser that has logged in as this patron before is counted on its own: neither the
    # account's lockout nor the address's limit stops it (auth.credentials.devices).
    seen = services.devices.open(request.cookies.get(services.devices.cookie_name))
    device = devices.trusted(seen, account.id, account.device_epoch) if account else None
    counted = (device.throttle_key,) if device else (account_key, address_key)
    wait = await services.throttle.retry_after(*counted)
    if wait > 0:
        # Blocked: not even the right password gets in, and no hashing work is spent.
        LOGINS.labels("throttled").inc()
        response = await failed(429, "login.throttled")
        response.headers["Retry-After"] = str(math.ceil(wait))
        return response
    try:
        verdict = await services.hasher.verify(
            account.password_hash if usable and account is not None else None, password
        )
    except HasherBusy:
        LOGINS.labels("busy").inc()
        response = await failed(503, "login.busy")
        response.headers["Retry-After"] = "5"
        return response
    if not verdict.ok or account is None or not usable:
        if device:
            blocked = await services.throttle.failed_on_device(device.throttle_key)
        else:
            blocked = await services.throttle.failed(account_key, address_key)
        LOGINS.labels("failure").inc()
        if account is not None:  # an unknown name is on nobody's trail
            trail.record_after_answer(
                request, trail.failed_attempt(request, account.id, blocked, form="login")
            )
        return await failed(401, "login.failed")
    # A trusted device's success leaves the account's counter alone: an attacker blocked
    # elsewhere stays blocked while the patron gets in.
    await services.throttle.succeeded(device.throttle_key if device else account_key)
    LOGINS.labels("success").inc()
    if verdict.new_hash is not None:
        await _upgrade_hash(request, account, verdict.new_hash)

    sid = await services.registry.create(
        account.id, services.lifetimes.absolute, user_agent=request.headers.get(hdrs.USER_AGENT)
    )
    # After the session, not before: a row never tells of a login that did not happen.
    await trail.record(
        request, "login_succeeded", account.id, account.username, new_device=device is None
    )
    if services.signin_notices and device is None:
        await send_signin_notice(request, account)
    session = await new_session(request)  # discard everything the anonymous session held
    now = int(time.time())
    session.update({"sid": sid, "uid": account.id, "iat": now, "seen": now})
    csrf.token_for(session)
    onward = web.HTTPSeeOther(location=next_path)
    trusted_from_now = devices.remember(seen, account.id, account.device_epoch)
    onward.set_cookie(
        services.devices.cookie_name,
        services.devices.seal(trusted_from_now),
        **services.devices.cookie_flags,
    )
    raise onward


async def _upgrade_hash(request: web.Request, account: Account, new_hash: str) -> None:
    """Replace an imported (or outdated) hash the patron's password just matched, with its
    row, unless the password changed meanwhile."""
    services = request.app[SERVICES]
    old = account.password_hash
    async with services.accounts.transaction() as conn:
        if await services.accounts.set_password_hash(account.id, new_hash, expected=old, conn=conn):
            await trail.record(
                request,
                "legacy_hash_upgraded",
                account.id,
                account.username,
                conn=conn,
                scheme=passwords.identify(old) if old else None,
            )


async def logout_form(request: web.Request) -> web.Response:
    identity = await request.app[SERVICES].authenticator.identify(request)
    return await render(request, "logout.html", username=identity.username if identity else None)


async def logout(request: web.Request) -> web.StreamResponse:
    await read_checked_form(request, ())
    await end_this_session(request)
    onward = web.HTTPSeeOther(location=urls.LOGIN)
    onward.set_cookie(LOGGED_OUT_COOKIE, "1", max_age=600, **_logged_out_flags(request))
    raise onward


async def end_this_session(request: web.Request) -> None:
    """Log this browser out: its session ends on every instance (and at the connected
    libraries it signed in to), with the patron's `logout` row in the same transaction.
    Also RP-initiated logout's (`auth.oidc.endsession`)."""
    services = request.app[SERVICES]
    session = await get_session(request)
    identity = await services.authenticator.identify(request)
    sid, uid = session.get("sid"), session.get("uid")
    if isinstance(sid, str):
        async with services.accounts.transaction() as conn:
            ended = await services.registry.revoke(sid, conn=conn)
            if ended and isinstance(uid, str):
                username = identity.username if identity is not None else None
                await trail.record(request, "logout", uid, username, conn=conn)
    request[IDENTITY] = None
    session.invalidate()


async def jwks(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[SERVICES].keys.jwks_body,
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=300"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get(urls.LOGIN, login_form)
    app.router.add_post(urls.LOGIN, login)
    app.router.add_get(urls.LOGOUT, logout_form)
    app.router.add_post(urls.LOGOUT, logout)
    app.router.add_get(urls.JWKS, jwks)
