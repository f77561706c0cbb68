"""The few answers the gateway writes itself on the proxy path: errors, "log in first" and
"this needs a membership".

Plain, small, no script, no version numbers, nothing echoed from the request: HTML for
browsers, JSON for everything else (chosen by Accept, like the login redirect). The HTML pages
carry the same document policy as the /auth/ pages (`auth.pages.render.DOCUMENT_HEADERS`).
An error page speaks the patron's language, chosen as the /auth/ pages choose it
(`auth.pages.render.language`), and says what to do next in words of the locale files (the
error's `page`); its English `reason` is for API clients' JSON only. The language is chosen
here, on the way out of a failure, so a request that succeeds never pays for it.
"""

from __future__ import annotations

import html
import json
import secrets

import jinja2
from aiohttp import web

from auth.memberships import InstitutionTable
from auth.pages import i18n
from auth.pages.membership import membership_page
from auth.pages.render import DOCUMENT_HEADERS, NONCE, language
from auth.pages.theme import Theme
from gateway.errors import GatewayError
from gateway.proxy.access import LoginRequired, MembershipRequired, wants_html

# The style carries the page's nonce: on /auth/ paths the pages' CSP allows no other inline
# style (`auth.pages.render.page_headers`).
_PAGE = """<!doctype html>
<html lang="{lang}"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="/auth/static/favicon.svg" type="image/svg+xml">
<style nonce="{nonce}">body{{font:1.1rem/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;
padding:0 1rem;color:#1d1d1b}}h1{{font-size:1.5rem}}</style></head>
<body><main><h1>{title}</h1><p>{text}</p><p><a href="/">{home}</a></p></main></body>
</html>
"""

_CODES = {
    400: "bad_request",
    401: "authentication_required",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    431: "headers_too_large",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


def error_response(request: web.Request, error: GatewayError) -> web.Response:
    """`error` as a small page in the patron's language for a browser, else as JSON with
    its English reason."""
    if wants_html(request.headers.get("Accept")):
        lang = language(request)
        t = i18n.translator(lang)
        nonce = request[NONCE] = secrets.token_urlsafe(16)
        body = _PAGE.format(
            lang=lang,
            nonce=nonce,
            title=html.escape(t[f"{error.page}.title"]),
            text=html.escape(t[f"{error.page}.text"]),
            home=html.escape(t["gateway_error.home"]),
        )
        return web.Response(
            status=error.status, text=body, content_type="text/html", headers=DOCUMENT_HEADERS
        )
    payload = {"error": _CODES.get(error.status, "error"), "message": error.reason}
    return web.Response(
        status=error.status, text=json.dumps(payload), content_type="application/json"
    )


def login_required(decision: LoginRequired) -> web.Response:
    if decision.browser:
        response = web.Response(status=302, headers={"Location": decision.login_url})
    else:
        payload = {"error": "authentication_required", "login_url": decision.login_url}
        response = web.Response(
            status=401,
            text=json.dumps(payload),
            content_type="application/json",
            headers={"WWW-Authenticate": 'Cookie realm="library"'},
        )
    response.headers["Cache-Control"] = "no-store"
    return response


def membership_required(
    request: web.Request,
    decision: MembershipRequired,
    institutions: InstitutionTable,
    *,
    templates: jinja2.Environment,
    theme: Theme,
) -> web.Response:
    """403 for a logged-in patron without the membership the route requires: a page for a
    browser, JSON for any other client; never a redirect to the login (they are logged in)."""
    short = decision.shortfall
    requirement = short.requirement
    institution = institutions.get(requirement.institution)
    if decision.browser:
        return membership_page(request, short, institution, templates=templates, theme=theme)
    expired = short.expired
    payload = {
        "error": "membership_required",
        "institution": requirement.institution,
        "types": sorted(requirement.types),
        "expired_on": expired.valid_until.isoformat() if expired and expired.valid_until else None,
        "renew_url": institution.renew_url if institution is not None else None,
    }
    return web.Response(
        status=403,
        text=json.dumps(payload),
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
