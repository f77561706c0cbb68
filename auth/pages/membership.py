"""The page a logged-in patron gets on a service that requires a membership they do not
hold (valid): which one is missing, or when theirs ran out, and where to renew it.

The proxy answers with it itself (`gateway.error_pages.membership_required`), outside the
application's middleware and session, so it is rendered here from plain data with the same
template environment, texts and security headers as every /auth/* page.
"""

from __future__ import annotations

import secrets

import jinja2
from aiohttp import web

from auth.memberships import Institution, Shortfall
from auth.pages import i18n
from auth.pages.render import NONCE, page_headers
from auth.pages.theme import Theme


def membership_page(
    request: web.Request,
    short: Shortfall,
    institution: Institution | None,
    *,
    templates: jinja2.Environment,
    theme: Theme,
) -> web.Response:
    """403 with the page, in the patron's language, in the institution's house style (the
    library's own when it has none)."""
    lang = i18n.negotiate(
        request.query.get("lang"),
        request.cookies.get(i18n.LANG_COOKIE),
        request.headers.get("Accept-Language"),
    )
    nonce = secrets.token_urlsafe(16)
    request[NONCE] = nonce
    requirement = short.requirement
    expired = short.expired
    body = templates.get_template("membership_required.html").render(
        lang=lang,
        t=i18n.translator(lang),
        nonce=nonce,
        theme=(institution.theme if institution is not None else None) or theme,
        next="",
        error=None,
        errors={},
        institution=institution.name if institution is not None else requirement.institution,
        types=sorted(requirement.types),
        expired_on=expired.valid_until.isoformat() if expired and expired.valid_until else None,
        renew_url=institution.renew_url if institution is not None else None,
    )
    response = web.Response(status=403, text=body, content_type="text/html")
    page_headers(request, response)
    return response
