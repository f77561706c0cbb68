"""The authorization endpoint and the consent page.

A request is read (`auth.oidc.requests`), the patron is found through the gateway's own
session, and then one of: our error page (unknown client or redirect URI), an error sent back
to the client, the login page (no session, `prompt=login`, `max_age` passed), the consent page
(a third-party client the patron has not yet allowed these scopes), or a code. A client that
requires a membership (`require:` in clients.yaml) gets `access_denied` for a patron without a
valid one, once the patron is identified: never the login page again, which would loop.

The consent form carries the request in the patron's session (not in the form), so a forged
form can neither change the client nor the scopes it grants.
"""

from __future__ import annotations

import time
from datetime import date
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp_session import get_session

from auth import urls
from auth.identity import Identity
from auth.memberships import shortfall
from auth.oidc.provider import PROVIDER, Provider
from auth.oidc.requests import (
    AuthorizationRequest,
    ErrorRedirect,
    NotRedirectable,
    answer_location,
    needs_login,
    read_authorization,
)
from auth.pages.forms import read_checked_form
from auth.pages.i18n import translator
from auth.pages.render import FORM_TARGETS, language, render
from auth.services import INSTITUTIONS, SERVICES

PENDING = "oidc_pending"
# prompt=login and max_age send the patron to log in anew: the session that was there is
# marked, and the request comes back marked too. A login makes a new session without the
# mark, so a request that comes back to a still-marked session was not logged in again.
RELOGIN = "relogin"


async def authorize(request: web.Request) -> web.StreamResponse:
    provider = request.app[PROVIDER]
    params = dict(await request.post()) if request.method == "POST" else dict(request.query)
    read = read_authorization(
        {k: v for k, v in params.items() if isinstance(v, str)}, provider.clients.table
    )
    if isinstance(read, NotRedirectable):
        return await _error_page(request, translator(language(request))[read.reason])
    if isinstance(read, ErrorRedirect):
        return _found(read.location(provider.issuer))
    identity = await request.app[SERVICES].authenticator.identify(request)
    session = await get_session(request)
    auth_time = session.get("iat") if identity is not None else None
    returning = RELOGIN in params
    if identity is None or not isinstance(auth_time, int):
        stale = True
    elif returning:
        stale = bool(session.get(RELOGIN))
    else:
        stale = "login" in read.prompt or needs_login(read, auth_time, int(time.time()))
        if stale:
            session[RELOGIN] = True
    if stale:
        if "none" in read.prompt:
            return _found(
                read.error("login_required", "the patron is not logged in").location(
                    provider.issuer
                )
            )
        return _found(_login_url(read, params))
    assert identity is not None and isinstance(auth_time, int)
    refused = _membership_refusal(request, read, identity)
    if refused is not None:
        return _found(refused.location(provider.issuer))
    client = read.client
    if not client.first_party:
        granted = await provider.grants.consented(identity.user_id, client.client_id)
        if not set(read.scopes) <= granted or "consent" in read.prompt:
            if "none" in read.prompt:
                return _found(
                    read.error("consent_required", "the patron has not allowed this yet").location(
                        provider.issuer
                    )
                )
            session[PENDING] = _pending(read, auth_time, identity.user_id)
            return await _consent_page(request, read)
    return _found(await _code_answer(provider, read, identity, auth_time))


async def consent(request: web.Request) -> web.StreamResponse:
    provider = request.app[PROVIDER]
    form = await read_checked_form(request, ("decision",))
    session = await get_session(request)
    pending = session.pop(PENDING, None)
    identity = await request.app[SERVICES].authenticator.identify(request)
    read = _restore(pending, provider) if isinstance(pending, dict) else None
    if read is None or identity is None or pending is None:
        return await _error_page(
            request, translator(language(request))["oidc.consent.expired"], status=400
        )
    if pending.get("uid") != identity.user_id:
        return await _error_page(
            request, translator(language(request))["oidc.consent.expired"], status=400
        )
    if form["decision"] != "allow":
        return _found(
            read.error("access_denied", "the patron did not allow it").location(provider.issuer)
        )
    refused = _membership_refusal(request, read, identity)
    if refused is not None:
        return _found(refused.location(provider.issuer))
    await provider.grants.consent(identity.user_id, read.client.client_id, frozenset(read.scopes))
    return _found(await _code_answer(provider, read, identity, int(pending["auth_time"])))


def _membership_refusal(
    request: web.Request, read: AuthorizationRequest, identity: Identity
) -> ErrorRedirect | None:
    """access_denied, naming the membership, when the client requires one the patron does
    not hold (valid today); None when it requires none or the patron holds it."""
    requirement = read.client.require
    if requirement is None:
        return None
    short = shortfall(identity.memberships, requirement, date.today())
    if short is None:
        return None
    institution = request.app[INSTITUTIONS].table.get(requirement.institution)
    name = institution.name if institution is not None else requirement.institution
    return read.error("access_denied", short.describe(name))


def _found(location: str) -> web.Response:
    """A 302 to `location` as built here (already encoded): no exception through the
    middlewares, no re-parsing of the URL."""
    return web.Response(status=302, headers={"Location": location})


async def _code_answer(
    provider: Provider, read: AuthorizationRequest, identity: Identity, auth_time: int
) -> str:
    code = await provider.grants.issue_code(
        client_id=read.client.client_id,
        account_id=identity.user_id,
        session=identity.session,
        redirect_uri=read.redirect_uri,
        scope=read.scope,
        nonce=read.nonce,
        code_challenge=read.code_challenge,
        auth_time=auth_time,
        sub=provider.subject(read.client, identity.user_id),
    )
    return answer_location(read.redirect_uri, {"code": code, "state": read.state}, provider.issuer)


def _login_url(read: AuthorizationRequest, params: dict[str, Any]) -> str:
    """The login page, coming back to this same request once the patron has logged in;
    marked as coming back (`RELOGIN`), so `prompt=login` and `max_age` are asked once."""
    onward = {k: v for k, v in params.items() if k not in ("prompt", RELOGIN)}
    onward[RELOGIN] = "1"
    prompt = read.prompt - {"login"}
    if prompt:
        onward["prompt"] = " ".join(sorted(prompt))
    query: dict[str, str] = {"next": f"{urls.OIDC_AUTHORIZE}?{urlencode(onward)}"}
    for locale in read.ui_locales:
        lang = locale.split("-")[0].lower()
        if lang in ("nl", "en"):
            query["lang"] = lang
            break
    return f"{urls.LOGIN}?{urlencode(query)}"


def _pending(read: AuthorizationRequest, auth_time: int, identity_id: str) -> dict[str, Any]:
    return {
        "client_id": read.client.client_id,
        "redirect_uri": read.redirect_uri,
        "scope": read.scope,
        "state": read.state,
        "nonce": read.nonce,
        "code_challenge": read.code_challenge,
        "auth_time": auth_time,
        "uid": identity_id,
    }


def _restore(pending: dict[str, Any], provider: Provider) -> AuthorizationRequest | None:
    client = provider.clients.table.get(str(pending.get("client_id", "")))
    if client is None or pending.get("redirect_uri") not in client.redirect_uris:
        return None
    return AuthorizationRequest(
        client=client,
        redirect_uri=str(pending["redirect_uri"]),
        scopes=tuple(str(pending.get("scope", "")).split()),
        state=pending.get("state"),
        nonce=pending.get("nonce"),
        code_challenge=pending.get("code_challenge"),
        prompt=frozenset(),
        max_age=None,
        login_hint=None,
        ui_locales=(),
    )


async def _consent_page(request: web.Request, read: AuthorizationRequest) -> web.Response:
    request[FORM_TARGETS] = read.client.redirect_uris
    return await render(
        request,
        "consent.html",
        client_name=read.client.name,
        scopes=[s for s in read.scopes if s != "openid"],
        theme=read.client.theme or request.app[SERVICES].theme,
    )


async def _error_page(request: web.Request, reason: str, *, status: int = 400) -> web.Response:
    t = translator(language(request))
    return await render(
        request, "message.html", status=status, title=t["oidc.error.title"], text=reason
    )


def add_routes(app: web.Application) -> None:
    app.router.add_route("GET", urls.OIDC_AUTHORIZE, authorize)
    app.router.add_route("POST", urls.OIDC_AUTHORIZE, authorize)
    app.router.add_post(urls.OIDC_CONSENT, consent)
