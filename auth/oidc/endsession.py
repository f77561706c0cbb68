"""RP-initiated logout (OpenID Connect RP-Initiated Logout 1.0): a connected library sends the
patron here to log out of the library account.

- An `id_token_hint` must be an ID token we issued (expired ones are taken, as the spec asks);
  a `post_logout_redirect_uri` is followed only when it is registered for the client the hint
  or `client_id` names, and `state` goes back with it. Anything else gets our own page,
  never a redirect.
- With a hint for the patron's current session the logout happens at once. Without one (or
  with a hint for another session) the patron is asked first, with a CSRF-protected form: a
  link on any site cannot log anyone out.
- The logout itself is the gateway's own: the session ends on every instance, and every
  library the session signed in to gets a back-channel logout (auth.oidc.logout).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web
from aiohttp_session import Session, get_session

from auth import urls
from auth.identity import Identity
from auth.oidc.clients import Client
from auth.oidc.provider import PROVIDER, Provider
from auth.pages import csrf
from auth.pages.forms import FormError, read_form
from auth.pages.i18n import translator
from auth.pages.login import end_this_session
from auth.pages.render import FORM_TARGETS, language, refusal, render
from auth.services import SERVICES

PENDING = "oidc_logout"
_PARAMETERS = ("id_token_hint", "client_id", "post_logout_redirect_uri", "state", "decision")


class Invalid(Exception):
    """The logout request cannot be honoured as asked; our page says so."""


async def end_session(request: web.Request) -> web.StreamResponse:
    provider = request.app[PROVIDER]
    params = await _parameters(request)
    session = await get_session(request)
    identity = await request.app[SERVICES].authenticator.identify(request)
    if params.get("decision"):
        return await _decided(request, params, session, identity, provider)
    try:
        client, redirect, claims = _read(params, provider)
    except Invalid:
        return await _invalid(request)
    state = params.get("state") or None
    if identity is None:
        return await _finish(request, redirect, state)
    if claims is not None and claims.get("sid") == identity.session[:32]:
        await end_this_session(request)  # /auth/logout's own
        return await _finish(request, redirect, state)
    session[PENDING] = {
        "client_id": client.client_id if client is not None else None,
        "redirect": redirect,
        "state": state,
        "uid": identity.user_id,
    }
    if redirect is not None:  # the confirmation form's answer ends there (CSP form-action)
        request[FORM_TARGETS] = (redirect,)
    return await render(
        request,
        "end_session.html",
        client_name=client.name if client is not None else None,
        username=identity.username,
        theme=(client.theme if client is not None else None) or request.app[SERVICES].theme,
    )


async def _parameters(request: web.Request) -> dict[str, str]:
    """The request's parameters: the query of a GET, the form of a POST (which is either the
    client's logout request or our confirmation form)."""
    if request.method != "POST":
        return {k: v for k, v in request.query.items() if k in _PARAMETERS}
    try:
        form = await read_form(request, (*_PARAMETERS, csrf.FIELD))
    except FormError as exc:
        raise exc.as_http() from None
    return {k: v for k, v in form.items() if v}


def _read(
    params: dict[str, str], provider: Provider
) -> tuple[Client | None, str | None, dict[str, Any] | None]:
    """The client, the redirect to follow afterwards and the hint's claims; `Invalid` for a
    hint we did not issue, a client that contradicts the hint, or an unregistered redirect."""
    claims = None
    if "id_token_hint" in params:
        claims = provider.signer.verify_id_token_hint(params["id_token_hint"])
        if claims is None:
            raise Invalid
    audience = claims.get("aud") if claims is not None else None
    if isinstance(audience, list):
        audience = audience[0] if len(audience) == 1 else None
    client_id = params.get("client_id")
    if client_id is not None and audience is not None and client_id != audience:
        raise Invalid
    named = client_id or audience
    client = provider.clients.table.get(named) if isinstance(named, str) else None
    if named is not None and client is None:
        raise Invalid
    redirect = params.get("post_logout_redirect_uri")
    if redirect is not None and (
        client is None or redirect not in client.post_logout_redirect_uris
    ):
        raise Invalid
    return client, redirect, claims


async def _decided(
    request: web.Request,
    params: dict[str, str],
    session: Session,
    identity: Identity | None,
    provider: Provider,
) -> web.StreamResponse:
    """The patron's answer on the confirmation page."""
    if not csrf.valid(session, params.get(csrf.FIELD, "")):
        raise await refusal(request, web.HTTPForbidden, "csrf.title", "csrf.text")
    pending = session.pop(PENDING, None)
    if params["decision"] != "logout":
        raise web.HTTPSeeOther(location=urls.ACCOUNT)
    redirect = state = None
    if (
        isinstance(pending, dict)
        and identity is not None
        and pending.get("uid") == identity.user_id
    ):
        client = provider.clients.table.get(str(pending.get("client_id")))
        wanted = pending.get("redirect")
        # Checked again: clients.yaml may have changed while the patron read the page.
        if client is not None and wanted in client.post_logout_redirect_uris:
            redirect, state = wanted, pending.get("state")
    if identity is not None:
        await end_this_session(request)  # /auth/logout's own
    return await _finish(request, redirect, state)


async def _finish(
    request: web.Request, redirect: str | None, state: str | None
) -> web.StreamResponse:
    if redirect is None:
        t = translator(language(request))
        return await render(
            request, "message.html", title=t["oidc.logout.done_title"], text=t["oidc.logout.done"]
        )
    location = redirect
    if state is not None:
        location += ("&" if "?" in redirect else "?") + urlencode({"state": state})
    return web.Response(status=303, headers={"Location": location})


async def _invalid(request: web.Request) -> web.Response:
    t = translator(language(request))
    return await render(
        request,
        "message.html",
        status=400,
        title=t["oidc.error.title"],
        text=t["oidc.logout.invalid"],
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get(urls.OIDC_LOGOUT, end_session)
    app.router.add_post(urls.OIDC_LOGOUT, end_session)
