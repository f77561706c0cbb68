"""The authorization endpoint and the consent page.

A request is read (`auth.oidc.requests`), the patron is found through the gateway's own
session, and then one of: our error page (unknown client or redirect URI), an error sent back
to the client, the login page (no session, `prompt=login`, `max_age` passed), the consent page
(a third-party client the patron has not yet allowed these scopes), or a code. A client that
requires a membership (`require:` in clients.yaml) gets `access_denied` for a patron without a
valid one, once the patron is identified: never the login page again, which would loop.

An `id_token_hint` must be an ID token of ours issued to the client (expired ones count: OIDC
Core 3.1.2.1); when it names someone other than the patron logged in, the request is never
answered for the one logged in: `login_required` under `prompt=none`, else the login page, as
for `prompt=login`.

The consent question is kept in the patron's session (not in the form), so a forged form can
change neither the client nor the scopes it grants; the form's CSRF token is bound to that
question (`csrf.bound_token`), so a page shown for one question cannot answer another that
replaced it meanwhile (a hostile site opening its own client's authorization in the same
browser), and each question is answered once (`Grants.answer`).
"""

from __future__ import annotations

import secrets
import time
from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp_session import get_session

from auth import clock, urls
from auth.identity import Identity
from auth.memberships import shortfall
from auth.oidc.provider import PROVIDER, Provider
from auth.oidc.requests import (
    QUESTION_TTL,
    AuthorizationRequest,
    ErrorRedirect,
    NotRedirectable,
    answer_location,
    answerable,
    hinted_subject,
    needs_login,
    read_authorization,
)
from auth.pages import csrf
from auth.pages.forms import FormError, read_form
from auth.pages.i18n import translator
from auth.pages.render import FORM_TARGETS, language, refusal, render
from auth.services import INSTITUTIONS, SERVICES

PENDING = "oidc_pending"
# prompt=login and max_age send the patron to log in anew: the session that was there is
# marked, and the request comes back marked too. A login makes a new session without the
# mark, so a request that comes back to a still-marked session was not logged in again.
RELOGIN = "relogin"
QUESTION = "oidc-consent:"
"""What a consent form's token is bound to: this, and the question's id."""


async def authorize(request: web.Request) -> web.StreamResponse:
    provider = request.app[PROVIDER]
    try:
        given = await request.post() if request.method == "POST" else request.query
    except ValueError:  # not UTF-8 (UnicodeDecodeError), or not a form at all
        return await _error_page(request, translator(language(request))["oidc.error.malformed"])
    params = {k: v for k, v in given.items() if isinstance(v, str)}
    repeated = {k for k in given if len(given.getall(k)) > 1}
    read = read_authorization(params, provider.clients.table, repeated=repeated)
    if isinstance(read, NotRedirectable):
        return await _error_page(request, translator(language(request))[read.reason])
    if isinstance(read, ErrorRedirect):
        return _found(read.location(provider.issuer))
    hinted: str | None = None
    if read.id_token_hint is not None:
        verified = provider.signer.verify_id_token_hint(read.id_token_hint)
        hinted = hinted_subject(verified, read.client)
        if hinted is None:
            return _found(
                read.error(
                    "invalid_request", "id_token_hint is not an ID token issued to this client"
                ).location(provider.issuer)
            )
    identity = await request.app[SERVICES].authenticator.identify(request)
    session = await get_session(request)
    auth_time = session.get("iat") if identity is not None else None
    returning = RELOGIN in params
    if identity is None or not isinstance(auth_time, int):
        stale = True
    elif returning:
        stale = bool(session.get(RELOGIN))
    else:
        stale = (
            "login" in read.prompt
            or needs_login(read, auth_time, int(time.time()))
            or (hinted is not None and hinted != provider.subject(read.client, identity.user_id))
        )
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
            pending = _pending(read, auth_time, identity.user_id)
            session[PENDING] = pending
            return await _consent_page(request, read, csrf.bound_token(session, pending["id"]))
    return _found(await _code_answer(provider, read, identity, auth_time))


async def consent(request: web.Request) -> web.StreamResponse:
    """The answer to the consent page: only to the question that page showed, and once. A
    token of no consent page of this session is refused as any forged form is (403); one of
    a page whose question is gone, replaced, answered or expired gets the expired page."""
    provider = request.app[PROVIDER]
    session = await get_session(request)
    try:
        form = await read_form(request, (csrf.FIELD, "decision"))
    except FormError as exc:
        raise exc.as_http() from None
    question = csrf.bound_purpose(session, form[csrf.FIELD])
    if question is None or not question.startswith(QUESTION):
        raise await refusal(request, web.HTTPForbidden, "csrf.title", "csrf.text")
    pending = session.pop(PENDING, None)
    identity = await request.app[SERVICES].authenticator.identify(request)
    read = _restore(pending, provider) if isinstance(pending, dict) else None
    if (
        read is None
        or identity is None
        or not isinstance(pending, dict)
        or not answerable(pending, account_id=identity.user_id, question=question, now=time.time())
        # Last: a double click, or an old copy of the cookie, brings the question back.
        or not await provider.grants.answer(question, int(pending["asked_at"]) + QUESTION_TTL)
    ):
        return await _expired(request)
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
    short = shortfall(identity.memberships, requirement, clock.today())
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
        "id": QUESTION + secrets.token_urlsafe(16),
        "asked_at": int(time.time()),
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


async def _consent_page(
    request: web.Request, read: AuthorizationRequest, token: str
) -> web.Response:
    request[FORM_TARGETS] = read.client.redirect_uris
    return await render(
        request,
        "consent.html",
        consent_token=token,
        client_name=read.client.name,
        scopes=[s for s in read.scopes if s != "openid"],
        theme=read.client.theme or request.app[SERVICES].theme,
    )


async def _expired(request: web.Request) -> web.Response:
    return await _error_page(request, translator(language(request))["oidc.consent.expired"])


async def _error_page(request: web.Request, reason: str, *, status: int = 400) -> web.Response:
    t = translator(language(request))
    return await render(
        request, "message.html", status=status, title=t["oidc.error.title"], text=reason
    )


def add_routes(app: web.Application) -> None:
    app.router.add_route("GET", urls.OIDC_AUTHORIZE, authorize)
    app.router.add_route("POST", urls.OIDC_AUTHORIZE, authorize)
    app.router.add_post(urls.OIDC_CONSENT, consent)
