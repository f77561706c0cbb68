"""The console application: everything under /staff/, mounted on the gateway's application
as a sub-application (`create_app` does it when GATEWAY_STAFF_CONSOLE is on; off, nothing is
mounted and every /staff/ URL is 404).

Its requests pass the gateway's page middleware first (request id, client address, errors
as pages), then `auth.staff.guard.gate` (the staff networks, the staff session); its
responses get the console's security headers (`auth.staff.render.console_headers`) besides
the gateway's own. Its files (the stylesheet, the passkey script) are read once at start and
served from memory, like the patron pages' (`auth.pages.static_files`).
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from auth import urls
from auth.pages import static_files
from auth.staff import activation, admin, audit_trail, enrol, login, patrons, security
from auth.staff.guard import gate, signed_in
from auth.staff.networks import Network
from auth.staff.render import console_headers, page

MAX_QUERY = 200


@signed_in
async def home(request: web.Request) -> web.StreamResponse:
    """The helpdesk's home: the patron search (its results are /staff/patrons?q=…)."""
    return await page(request, "home.html", q=request.query.get("q", "")[:MAX_QUERY])


async def to_home(_request: web.Request) -> web.StreamResponse:
    raise web.HTTPPermanentRedirect(urls.STAFF_HOME)


def application(networks: Sequence[Network]) -> web.Application:
    """The console, to mount at `auth.urls.STAFF`; outside `networks` (when any) it is 404."""
    console = web.Application(middlewares=[gate(tuple(networks))])
    console.on_response_prepare.append(console_headers)
    console.router.add_get(urls.STAFF_HOME.removeprefix(urls.STAFF), home)
    console.router.add_get("", to_home)  # /staff itself
    for module in (login, activation, security, enrol, admin, audit_trail, patrons):
        module.add_routes(console)
    static = urls.STAFF_STATIC.removeprefix(urls.STAFF) + "/{name}"
    console.router.add_get(static, static_files.from_memory("auth.staff"))
    return console
