"""The guard every console request passes, and the marks a handler wears to say who may use
it.

`gate` is the console application's middleware, first of all its work: outside
GATEWAY_STAFF_NETWORKS every /staff/ URL is 404, cookie or not. Then the staff session the
cookie names is read and judged (ended, idle, too old, or its member disabled: the cookie is
cleared, and the request is anonymous); a live one is kept on the request (`SESSION`), and a
fully signed-in one also as `STAFF`: who is signed in, for every console page.

Handlers say what they need: `signed_in` (any staff member; anonymous browsers go to the
sign-in page), `admin_only` (an admin; a helpdesk member gets 403), or `at_stage` (a session
part-way through signing in or enrolling). A patron's session cookie is never read here.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from auth import urls
from auth.credentials.throttle import CLIENT_ADDRESS
from auth.staff.identity import SESSION, STAFF, StaffIdentity
from auth.staff.networks import Network, allowed
from auth.staff.render import BINDING, CLEAR_SESSION, refusal, settle_cookies
from auth.staff.services import STAFF_SERVICES
from auth.staff.sessions import Stage, cookie_name, live


def gate(networks: Sequence[Network]) -> Middleware:
    @web.middleware
    async def staff_gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not allowed(request.get(CLIENT_ADDRESS), networks):
            raise web.HTTPNotFound()
        await _resolve(request)
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            settle_cookies(request, exc)
            raise
        settle_cookies(request, response)
        return response

    return staff_gate


async def _resolve(request: web.Request) -> None:
    services = request.config_dict[STAFF_SERVICES]
    token = request.cookies.get(cookie_name(services.secure))
    if token is None:
        return
    session = await services.sessions.find(token)
    if session is None:
        request[CLEAR_SESSION] = True
        return
    if session.disabled or not live(
        session.stage, session.created_at, session.last_seen_at, session.now, services.lifetimes
    ):
        await services.sessions.end(session.id)
        request[CLEAR_SESSION] = True
        return
    await services.sessions.touch(session.id)
    request[SESSION] = session
    request[BINDING] = token
    if session.stage == "full":
        request[STAFF] = StaffIdentity(session.staff_id, session.email, session.role)


StaffHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def signed_in(handler: StaffHandler) -> StaffHandler:
    """Any signed-in staff member; anybody else is sent to the sign-in page."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        if STAFF not in request:
            raise web.HTTPSeeOther(urls.STAFF_LOGIN)
        return await handler(request)

    return guarded


def admin_only(handler: StaffHandler) -> StaffHandler:
    """An admin; a helpdesk member gets 403, anybody else the sign-in page."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        if STAFF not in request:
            raise web.HTTPSeeOther(urls.STAFF_LOGIN)
        if not request[STAFF].admin:
            raise await refusal(
                request, web.HTTPForbidden, "staff.forbidden.title", "staff.forbidden.text"
            )
        return await handler(request)

    return guarded


def at_stage(*stages: Stage) -> Callable[[StaffHandler], StaffHandler]:
    """A session at one of `stages` (part-way through signing in or enrolling, or signed
    in); anybody else is sent to the sign-in page."""

    def mark(handler: StaffHandler) -> StaffHandler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> web.StreamResponse:
            session = request.get(SESSION)
            if session is None or session.stage not in stages:
                raise web.HTTPSeeOther(urls.STAFF_LOGIN)
            return await handler(request)

        return guarded

    return mark
