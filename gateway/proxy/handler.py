"""Forwarding one request to its backend and streaming the response back.

Everything that is not one of the gateway's own pages lands here (from
`gateway.server.front`), with its target already normalised. `Proxy.handle` looks the route
up, identifies the patron and asks the access decision (`gateway.proxy.access`), builds the
backend's headers, and hands the request to `forward`, which streams both bodies without
holding them in memory, or to `bridge` for a WebSocket. It runs
for every request of every patron, so it does only what it must: the cookie is read without a
session object, the identity token comes from a cache, and a small response goes back to the
client in one write.
"""

from __future__ import annotations

import functools
import logging
import time
import weakref
from collections.abc import AsyncIterator

import jinja2
from aiohttp import HttpVersion11, web
from multidict import CIMultiDict

from auth.identity import Identity
from auth.pages.theme import Theme
from auth.services import InstitutionSource
from auth.sessions.authenticator import Authenticator, Renewal, Unsettled
from auth.signing import SigningUnavailable
from auth.store.availability import DatabaseUnavailable
from gateway.config.reload import RouteMap
from gateway.config.routes import Route
from gateway.config.settings import Settings
from gateway.error_pages import login_required, membership_required
from gateway.errors import (
    ExpectationFailed,
    Forbidden,
    NotFound,
    PayloadTooLarge,
    ServiceBusy,
)
from gateway.exchange import Exchange
from gateway.ops import metrics
from gateway.proxy import access, headers, websocket
from gateway.proxy.connection import ConnectionClosed
from gateway.proxy.upstream import Upstream

log = logging.getLogger("gateway.proxy")

_NO_BODY_STATUSES = frozenset({204, 304})
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})
# How often, at most, a route that lets shared caches keep a patron's answers is logged (s).
SHARED_CACHE_WARNING_EVERY = 3600.0


def _has_body(request: web.Request) -> bool:
    headers = request.headers
    if "Transfer-Encoding" in headers:
        return True
    if "Content-Length" not in headers:
        return request.method not in _BODYLESS_METHODS and request.body_exists
    return bool(request.content_length)


def _expects_continue(request: web.Request) -> bool:
    """Whether the client waits for "100 Continue" before it sends its body; any other
    expectation is refused (the backend never sees Expect: the gateway answers it)."""
    expect = request.headers.get("Expect")
    if expect is None or request.version != HttpVersion11:
        return False
    if expect.lower() != "100-continue":
        raise ExpectationFailed("The gateway meets no expectation but 100-continue.")
    return True


class Proxy:
    """Sends a request on to its backend: `handle` authorises it, then either `forward`s it
    (the body streamed both ways) or `bridge`s a WebSocket."""

    def __init__(
        self,
        settings: Settings,
        routes: RouteMap,
        authenticator: Authenticator,
        upstream: Upstream,
        websockets: weakref.WeakSet[web.WebSocketResponse],
        *,
        institutions: InstitutionSource,
        templates: jinja2.Environment,
        theme: Theme,
    ) -> None:
        self._routes = routes
        # For the page of a patron without the membership a route requires.
        self._institutions = institutions
        self._templates = templates
        self._theme = theme
        self._authenticator = authenticator
        self._upstream = upstream
        self._websockets = websockets
        self._public_proto = settings.public_proto
        self._public_host = settings.public_host
        self._https = settings.https
        # What the Origin of a WebSocket handshake that carries a session must be.
        self._origin = websocket.origin_of(settings.public_url)
        # When each route was last logged for letting shared caches keep patrons' answers.
        self._shared_cache_warned: dict[str, float] = {}

    async def handle(self, request: web.Request, exchange: Exchange) -> web.StreamResponse:
        target = exchange.target
        assert target is not None, "the front door proxies only normalised targets"
        route = self._routes.table.match(target.path)
        if route is not None:
            exchange.route = route.name
        continues = route is not None and _expects_continue(request)
        authenticator = self._authenticator
        cookie = authenticator.storage.load_cookie(request)
        spans = exchange.spans
        if spans is None:
            known = authenticator.identify_cookie(cookie)
            identity, renewal = (
                await self._settle(known, route, target.path)
                if isinstance(known, Unsettled)
                else known
            )
        else:
            with spans.session_check() as check:
                known = authenticator.identify_cookie(cookie)
                identity, renewal = (
                    await self._settle(known, route, target.path)
                    if isinstance(known, Unsettled)
                    else known
                )
                check.outcome(
                    logged_in=identity is not None, asked_database=isinstance(known, Unsettled)
                )
        # What the patron's cookie needs on the way back, if anything (a refresh once a
        # minute, or clearing); None nearly always.
        renew = None if cookie is None or renewal is Renewal.KEEP else (cookie, renewal)
        decision = access.decide(
            route,
            target.path,
            target.query,
            logged_in=identity is not None,
            accept=request.headers.get("Accept"),
            memberships=identity.memberships if identity is not None else (),
        )
        if not isinstance(decision, access.Forward):
            refused = (
                self._membership_required(request, decision)
                if isinstance(decision, access.MembershipRequired)
                else _refusal(decision)
            )
            if renew is not None:
                await authenticator.renew(request, refused, *renew)
            return refused
        if decision.with_identity:
            assert identity is not None
            exchange.user_id = identity.user_id
        route = decision.route
        upgrade = websocket.is_upgrade(request)
        # Cross-site WebSocket hijacking: the patron's cookie came along with a handshake
        # another site's page started, and the socket would carry the patron's data there.
        if upgrade and decision.with_identity and websocket.cross_site(request, self._origin):
            raise Forbidden("This connection was opened by another site.")
        upstream_path = route.upstream_path(target.path)
        # With spans exported, the backend's parent is the gateway's upstream span.
        trace = (
            exchange.trace
            if spans is None
            else spans.start_upstream(request.method, route, upstream_path)
        )
        upstream_headers = headers.upstream_request_headers(
            request.headers,
            backend_host=route.backend.host_header,
            forwarded_for=exchange.forwarded_for,
            public_proto=self._public_proto,
            public_host=self._public_host,
            request_id=exchange.request_id,
            cookie_name=authenticator.cookie_name,
            trace=trace,
            identity=(
                _identity_headers(authenticator, identity, route.name)
                if decision.with_identity and identity is not None
                else []
            ),
            websocket=upgrade,
        )
        upstream_target = upstream_path + "?" + target.query if target.query else upstream_path
        if upgrade:
            return await self.bridge(
                request,
                exchange,
                route,
                upstream_target,
                upstream_headers,
                renew,
                identity if decision.with_identity else None,
            )
        return await self.forward(
            request,
            exchange,
            route,
            upstream_target,
            upstream_headers,
            renew,
            continues,
            personal=decision.with_identity,
        )

    async def bridge(
        self,
        request: web.Request,
        exchange: Exchange,
        route: Route,
        upstream_target: str,
        upstream_headers: list[tuple[str, str]],
        renew: tuple[str, Renewal] | None,
        identity: Identity | None = None,
    ) -> web.StreamResponse:
        """Relay a WebSocket the access decision let through; one that tells the backend who
        the patron is (`identity`) is held under the patron's session and ends with it."""
        url = route.backend.origin + upstream_target
        return await websocket.bridge(
            request,
            route,
            url,
            CIMultiDict(upstream_headers),
            self._upstream,
            self._websockets,
            functools.partial(self._before_start, request, exchange.request_id, renew),
            (
                functools.partial(self._authenticator.registry.hold, identity)
                if identity is not None
                else None
            ),
        )

    async def forward(
        self,
        request: web.Request,
        exchange: Exchange,
        route: Route,
        upstream_target: str,
        upstream_headers: list[tuple[str, str]],
        renew: tuple[str, Renewal] | None,
        continues: bool,
        *,
        personal: bool = False,
    ) -> web.StreamResponse:
        """Send the request to the backend and stream its response back to the client;
        `personal`: the backend was told who asks, so its answer is one patron's and is
        kept out of shared caches (`headers.downstream_response_headers`)."""
        body = request if _has_body(request) else None
        if body is not None:
            declared = request.content_length
            if route.max_body is not None and declared is not None and declared > route.max_body:
                raise PayloadTooLarge("The upload is larger than this service accepts.")
            if continues:
                # Only now, with the request allowed and its size acceptable, is the client
                # asked for its body.
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                request.writer.output_size = 0
        asked = time.perf_counter()
        _, overhead, upstream_time = metrics.route_histograms(route.name)
        overhead.observe(asked - exchange.started)
        call = self._upstream.request(
            route, request.method, upstream_target, upstream_headers, body
        )
        spans = exchange.spans
        backend_response, connection = await (call if spans is None else spans.upstream_call(call))
        authenticator = self._authenticator
        try:
            upstream_time.observe(time.perf_counter() - asked)
            response_headers, length, shared = headers.downstream_response_headers(
                backend_response.headers, cookie_name=authenticator.cookie_name, personal=personal
            )
            if shared:
                self._shared_cache_warning(route.name)
            streams = request.method == "HEAD" or backend_response.status in _NO_BODY_STATUSES
            whole = None if streams else connection.whole_body()
            if whole is not None and (length is None or length == len(whole)):
                # The common small response arrived in one piece: head and body go out
                # together.
                small = web.Response(
                    status=backend_response.status,
                    reason=backend_response.reason,
                    headers=response_headers,
                    body=whole,
                )
                if renew is not None:
                    await authenticator.renew(request, small, *renew)
                    headers.keep_from_shared_caches(small.headers)
                return small
            response = web.StreamResponse(
                status=backend_response.status,
                reason=backend_response.reason,
                headers=response_headers,
            )
            if length is not None:
                response.content_length = length
            await self._before_start(request, exchange.request_id, renew, response)
            await response.prepare(request)
            if not streams:
                await _pump(request, connection.body(), response)
            await response.write_eof()
            return response
        except BaseException:
            connection.close()
            raise
        finally:
            self._upstream.release(route, connection)

    async def _settle(
        self, unsettled: Unsettled, route: Route | None, path: str
    ) -> tuple[Identity | None, Renewal]:
        """The session record's answer. While the database cannot give one (and this instance
        cannot vouch for the session), a path that needs no login is served anonymously with
        the cookie kept; on any other `DatabaseUnavailable` goes on, to be answered 503 at
        the edge: the patron is not sent to a login that could not work either."""
        try:
            return await self._authenticator.settle(unsettled)
        except DatabaseUnavailable:
            if route is not None and route.needs_login(path):
                raise
            return None, Renewal.KEEP

    def _membership_required(
        self, request: web.Request, decision: access.MembershipRequired
    ) -> web.Response:
        return membership_required(
            request,
            decision,
            self._institutions.table,
            templates=self._templates,
            theme=self._theme,
        )

    def _shared_cache_warning(self, route_name: str) -> None:
        """The backend's answer to a patron says shared caches may keep it: its word stands
        (it may know better), but the operator hears of it, once in a while per route, never
        who the patron was."""
        now = time.monotonic()
        last = self._shared_cache_warned.get(route_name)
        if last is not None and now - last < SHARED_CACHE_WARNING_EVERY:
            return
        self._shared_cache_warned[route_name] = now
        log.warning(
            "route %s answered a logged-in patron with Cache-Control public or s-maxage: "
            "shared caches may hand that answer to other people",
            route_name,
            extra={"route": route_name},
        )

    async def _before_start(
        self,
        request: web.Request,
        request_id: str,
        renew: tuple[str, Renewal] | None,
        response: web.StreamResponse,
    ) -> None:
        """Finish the head of a response the proxy starts itself: past that point its caller
        could not stamp it any more."""
        headers.stamp_response(response.headers, request_id, self._https)
        if renew is not None:
            await self._authenticator.renew(request, response, *renew)
            headers.keep_from_shared_caches(response.headers)


def _refusal(decision: access.LoginRequired | access.Redirect | access.Unrouted) -> web.Response:
    if isinstance(decision, access.LoginRequired):
        return login_required(decision)
    if isinstance(decision, access.Redirect):
        return web.Response(status=302, headers={"Location": decision.location})
    raise NotFound()


def _identity_headers(
    authenticator: Authenticator, identity: Identity | None, audience: str
) -> list[tuple[str, str]]:
    if identity is None:
        return []
    try:
        return authenticator.identity_headers(identity, audience)
    except SigningUnavailable as exc:
        raise ServiceBusy("The login service cannot vouch for you right now.") from exc


async def _pump(
    request: web.Request, answer_body: AsyncIterator[bytes], response: web.StreamResponse
) -> None:
    # write() waits for the transport to drain, so a slow client slows the backend read
    # instead of filling memory.
    try:
        async for chunk in answer_body:
            await response.write(chunk)
    except ConnectionClosed:
        # The backend broke off mid-body. The status line is gone already; the only honest
        # signal left is to cut the client's connection so the body is seen as incomplete.
        if request.transport is not None:
            request.transport.abort()
        raise ConnectionResetError("backend closed the response early") from None
