"""Rendering an /auth/* page, and the headers every such response carries.

Pages are never cached, never framed, never leak a Referer (reset links carry tokens), run
under a CSP that allows no script and only the page's own nonce-tagged style, may use none of
the browser's powerful features, and share no window with another site's pages.
"""

from __future__ import annotations

import secrets
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from aiohttp import web
from aiohttp_session import get_session

from auth.pages import csrf, i18n
from auth.services import SERVICES, TEMPLATES

NONCE = web.RequestKey[str]("auth.nonce")
LANG = web.RequestKey[str]("auth.lang")
# Where a page's form may lead besides this host: the redirect URIs of the client a login or
# consent page was opened for (browsers apply form-action to the redirects after a submit).
FORM_TARGETS = web.RequestKey[tuple[str, ...]]("auth.form_targets")

# The powerful features a browser lets a page use, by their Permissions Policy names: the
# pages need none, so nothing that ever got into one can ask for the camera or a payment.
# Only names Chromium knows on every platform it ships on (its permissions_policy_features.json5
# without a `depends_on` on an API some platforms lack): any other name costs every page a
# console warning "Unrecognized feature" there. So `ambient-light-sensor` and `bluetooth`
# (behind flags on some platforms), `web-share`, `hid`, `serial`, `local-fonts` and
# `picture-in-picture` (missing on some) and `browsing-topics` (being retired) are not named;
# the pages run no script (their CSP), so none of those is reachable from them anyway.
# Firefox does not read the header.
_FEATURES_OFF = (
    "accelerometer",
    "autoplay",
    "camera",
    "clipboard-read",
    "clipboard-write",
    "display-capture",
    "encrypted-media",
    "fullscreen",
    "gamepad",
    "geolocation",
    "gyroscope",
    "idle-detection",
    "magnetometer",
    "microphone",
    "midi",
    "payment",
    "publickey-credentials-get",
    "screen-wake-lock",
    "usb",
    "xr-spatial-tracking",
)
PERMISSIONS_POLICY = ", ".join(f"{feature}=()" for feature in _FEATURES_OFF)
# A page opened from another site's window, or opening one, keeps no handle on it either way
# (no reverse tabnabbing, no cross-window probing of the login page).
OPENER_POLICY = "same-origin"
DOCUMENT_HEADERS = (
    ("Permissions-Policy", PERMISSIONS_POLICY),
    ("Cross-Origin-Opener-Policy", OPENER_POLICY),
)
"""What every HTML page the gateway writes itself carries: these pages and its error pages."""


def language(request: web.Request) -> str:
    if LANG not in request:
        request[LANG] = i18n.negotiate(
            request.query.get("lang"),
            request.cookies.get(i18n.LANG_COOKIE),
            request.headers.get("Accept-Language"),
        )
    return request[LANG]


async def render(
    request: web.Request, template: str, *, status: int = 200, **context: Any
) -> web.Response:
    return await _fill(web.Response(status=status), request, template, context)


async def message(
    request: web.Request,
    status: int,
    title_key: str,
    text_key: str,
    *,
    link: str | None = None,
    link_key: str | None = None,
) -> web.Response:
    """A page that only says something: a title, a text and, if given, one link onward
    (`link_key` names its text)."""
    return await _fill(
        web.Response(status=status),
        request,
        "message.html",
        _message_context(request, title_key, text_key, link, link_key),
    )


async def refusal(
    request: web.Request, refuse: type[web.HTTPException], title_key: str, text_key: str
) -> web.HTTPException:
    """The message page as an exception to raise, for a refusal made deep below a handler
    (a form's CSRF check) that the handler need not pass on."""
    return await _fill(
        refuse(), request, "message.html", _message_context(request, title_key, text_key)
    )


def _message_context(
    request: web.Request,
    title_key: str,
    text_key: str,
    link: str | None = None,
    link_key: str | None = None,
) -> dict[str, Any]:
    t = i18n.translator(language(request))
    context: dict[str, Any] = {"title": t[title_key], "text": t[text_key]}
    if link is not None and link_key is not None:
        context.update(link=link, link_text=t[link_key])
    return context


_R = TypeVar("_R", bound=web.Response)


async def _fill(response: _R, request: web.Request, template: str, context: dict[str, Any]) -> _R:
    """Render `template` into `response` (a page or an exception to raise)."""
    services = request.app[SERVICES]
    session = await get_session(request)
    nonce = secrets.token_urlsafe(16)
    request[NONCE] = nonce
    lang = language(request)
    defaults = (
        ("next", ""),
        ("notice", None),
        ("error", None),
        ("link", None),
        ("client_name", None),
    )
    for name, default in defaults:
        context.setdefault(name, default)
    # Links between the login pages keep where the patron was going (already checked by
    # safe_next wherever it came from).
    destination = context["next"]
    context["next_query"] = (
        f"?next={quote(destination, safe='')}" if destination not in ("", "/") else ""
    )
    context.setdefault("errors", {})
    context.setdefault("theme", services.theme)
    response.content_type = "text/html"
    response.text = (
        request.app[TEMPLATES]
        .get_template(template)
        .render(
            lang=lang,
            t=i18n.translator(lang),
            nonce=nonce,
            csrf_token=csrf.token_for(session),
            **context,
        )
    )
    keep_language_choice(request, response, lang, secure=services.public_url.startswith("https://"))
    return response


def keep_language_choice(
    request: web.Request, response: web.StreamResponse, lang: str, *, secure: bool
) -> None:
    """A language chosen with `?lang=` is remembered for a year, for the patrons' pages and
    the staff console alike (`Secure` when the gateway is reached over https)."""
    if request.query.get("lang") in i18n.LANGUAGES:
        response.set_cookie(
            i18n.LANG_COOKIE,
            lang,
            path="/",
            secure=secure,
            httponly=True,
            samesite="Lax",
            max_age=365 * 86400,
        )


def page_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The security headers of every /auth/* response (set as the response is prepared)."""
    nonce = request.get(NONCE)
    style = f"'self' 'nonce-{nonce}'" if nonce else "'self'"
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Permissions-Policy"] = PERMISSIONS_POLICY
    response.headers["Cross-Origin-Opener-Policy"] = OPENER_POLICY
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; style-src {style}; img-src 'self' https: data:; "
        f"form-action {_form_action(request.get(FORM_TARGETS, ()))}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )


def _form_action(targets: tuple[str, ...]) -> str:
    origins = sorted({_origin(target) for target in targets})
    return " ".join(["'self'", *origins])


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
