"""The few answers the gateway writes itself on the proxy path: errors, "log in first" and
"this needs a membership".

Plain, small, no script, no version numbers, nothing echoed from the request: HTML for
browsers, JSON for everything else (chosen by Accept, like the login redirect). The HTML pages
carry the same document policy as the /auth/ pages (`auth.pages.render.DOCUMENT_HEADERS`).
"""

from __future__ import annotations

import html
import json

import jinja2
from aiohttp import web

from auth.memberships import InstitutionTable
from auth.pages.membership import membership_page
from auth.pages.render import DOCUMENT_HEADERS
from auth.pages.theme import Theme
from gateway.proxy.access import LoginRequired, MembershipRequired, wants_html

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>body{{font:1.1rem/1.5 system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;
color:#1d1d1b}}h1{{font-size:1.5rem}}</style></head>
<body><main><h1>{title}</h1><p>{text}</p><p><a href="/">Back to the library</a></p></main></body>
</html>
"""

_CODES = {
    400: "bad_request",
    401: "authentication_required",
    404: "not_found",
    413: "payload_too_large",
    431: "headers_too_large",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


def error_response(status: int, title: str, text: str, accept: str | None) -> web.Response:
    if wants_html(accept):
        body = _PAGE.format(title=html.escape(title), text=html.escape(text))
        return web.Response(
            status=status, text=body, content_type="text/html", headers=DOCUMENT_HEADERS
        )
    payload = {"error": _CODES.get(status, "error"), "message": text}
    return web.Response(status=status, text=json.dumps(payload), content_type="application/json")


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
