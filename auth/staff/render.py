"""Rendering a console page, and the headers every /staff/ response carries.

The console's pages follow the /auth/ pages' document policy (never cached, never framed, no
Referer, a nonce for the page's one style block), with two differences: the passkey pages
may run the console's one script file, named by the page's nonce (nothing inline, nothing
else), and every console page may use WebAuthn (the Permissions-Policy allows
`publickey-credentials-*` to this origin alone, where the patron pages allow it to nobody).

Every form's CSRF token is derived from the browser's own secret (`auth.staff.csrf`): the
staff session's token, or before there is one the form cookie, set here when missing.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from auth.pages import i18n
from auth.pages.render import (
    OPENER_POLICY,
    PERMISSIONS_POLICY,
    keep_language_choice,
    language,
)
from auth.services import SERVICES, TEMPLATES
from auth.staff import csrf
from auth.staff.identity import STAFF
from auth.staff.services import STAFF_SERVICES
from auth.staff.sessions import FORM_COOKIE_NAME, cookie_flags, cookie_name, new_token, plausible

NONCE = web.RequestKey[str]("auth.staff.nonce")
SCRIPT = web.RequestKey[bool]("auth.staff.script")
BINDING = web.RequestKey[str]("auth.staff.binding")
"""The secret this request's forms are bound to: the staff session's token, else the form
cookie's value."""
NEW_FORM_COOKIE = web.RequestKey[str]("auth.staff.new_form_cookie")
CLEAR_SESSION = web.RequestKey[bool]("auth.staff.clear_session")

_WEBAUTHN_OFF = "publickey-credentials-get=()"
assert _WEBAUTHN_OFF in PERMISSIONS_POLICY
CONSOLE_PERMISSIONS_POLICY = PERMISSIONS_POLICY.replace(
    _WEBAUTHN_OFF, "publickey-credentials-create=(self), publickey-credentials-get=(self)"
)


def binding(request: web.Request) -> str:
    """The secret the page's forms are bound to, made (as a new form cookie) if the
    browser has none."""
    if BINDING not in request:
        services = request.config_dict[STAFF_SERVICES]
        held = request.cookies.get(cookie_name(services.secure, FORM_COOKIE_NAME))
        if not plausible(held):
            held = new_token()
            request[NEW_FORM_COOKIE] = held
        assert held is not None
        request[BINDING] = held
    return request[BINDING]


def form_ok(request: web.Request, sent: str) -> bool:
    """Whether a form's token is this browser's: checked against the session's secret when
    there is a session, else the form cookie's (never made here: a POST without the cookie
    has no token that could be right)."""
    if BINDING in request:
        return csrf.valid(request[BINDING], sent)
    services = request.config_dict[STAFF_SERVICES]
    held = request.cookies.get(cookie_name(services.secure, FORM_COOKIE_NAME))
    return plausible(held) and csrf.valid(held, sent)


def _language_links(request: web.Request) -> list[tuple[str, str, str | None]]:
    """(code, label, href): the page itself in the other language, its query kept."""
    links: list[tuple[str, str, str | None]] = []
    for code, label in (("nl", "Nederlands"), ("en", "English")):
        query = [(k, v) for k, v in request.query.items() if k != "lang"] + [("lang", code)]
        links.append((code, label, f"{request.path}?{urlencode(query)}"))
    return links


async def page(
    request: web.Request,
    template: str,
    *,
    status: int = 200,
    script: bool = False,
    response: web.Response | None = None,
    **context: Any,
) -> web.Response:
    """The console page `template` (under templates/staff/); `script`: the page runs the
    console's passkey script."""
    out = response if response is not None else web.Response(status=status)
    nonce = secrets.token_urlsafe(16)
    request[NONCE] = nonce
    request[SCRIPT] = script
    lang = language(request)
    context.setdefault("error", None)
    context.setdefault("notice", None)
    context.setdefault("errors", {})
    out.content_type = "text/html"
    out.text = (
        request.config_dict[TEMPLATES]
        .get_template(f"staff/{template}")
        .render(
            lang=lang,
            t=i18n.translator(lang),
            nonce=nonce,
            csrf_token=csrf.token_for(binding(request)),
            staff=request.get(STAFF),
            theme=request.config_dict[SERVICES].theme,
            language_links=_language_links(request),
            path=request.path,
            passkeys_usable=request.config_dict[STAFF_SERVICES].relying_party.usable,
            **context,
        )
    )
    keep_language_choice(request, out, lang, secure=request.config_dict[STAFF_SERVICES].secure)
    return out


async def message(
    request: web.Request,
    status: int,
    title_key: str,
    text_key: str,
    *,
    link: str | None = None,
    link_key: str | None = None,
) -> web.Response:
    t = i18n.translator(language(request))
    return await page(
        request,
        "message.html",
        status=status,
        title=t[title_key],
        text=t[text_key],
        link=link,
        link_text=t[link_key] if link_key else None,
    )


async def refusal(
    request: web.Request, refuse: type[web.HTTPException], title_key: str, text_key: str
) -> web.HTTPException:
    """The message page as an exception to raise."""
    t = i18n.translator(language(request))
    filled = await page(
        request,
        "message.html",
        response=refuse(),
        title=t[title_key],
        text=t[text_key],
        link=None,
        link_text=None,
    )
    assert isinstance(filled, web.HTTPException)
    return filled


def set_session_cookie(request: web.Request, response: web.StreamResponse, token: str) -> None:
    """Give the browser a new staff session (its forms are bound to it from now on)."""
    services = request.config_dict[STAFF_SERVICES]
    response.set_cookie(cookie_name(services.secure), token, **cookie_flags(services.secure))
    request[BINDING] = token
    request[CLEAR_SESSION] = False


def settle_cookies(request: web.Request, response: web.StreamResponse) -> None:
    """The cookies a request left to set or clear, put on its response (by the guard, once
    the handler is done: aiohttp writes cookies before the response signal runs)."""
    secure = request.config_dict[STAFF_SERVICES].secure
    if NEW_FORM_COOKIE in request and request.get(BINDING) == request[NEW_FORM_COOKIE]:
        response.set_cookie(
            cookie_name(secure, FORM_COOKIE_NAME), request[NEW_FORM_COOKIE], **cookie_flags(secure)
        )
    if request.get(CLEAR_SESSION):
        flags = cookie_flags(secure)
        response.del_cookie(
            cookie_name(secure),
            path=flags["path"],
            secure=secure,
            httponly=True,
            samesite="Strict",
        )


async def console_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The console application's on_response_prepare: the security headers."""
    nonce = request.get(NONCE)
    style = f"'self' 'nonce-{nonce}'" if nonce else "'self'"
    script = f"script-src 'nonce-{nonce}'; " if nonce and request.get(SCRIPT) else ""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Permissions-Policy"] = CONSOLE_PERMISSIONS_POLICY
    response.headers["Cross-Origin-Opener-Policy"] = OPENER_POLICY
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src {style}; {script}img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    )
