"""Forwarding one request to its backend and streaming the answer back.

The handler is the catch-all of the gateway's router: everything that is not one of the
gateway's own pages lands here, already normalised by the target middleware. It looks the route
up, asks the access decision, builds the backend's headers and streams both bodies without
holding them in memory.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiohttp import web

from auth.gate import Authenticator
from auth.identity import Identity
from auth.tokens import SigningUnavailable
from gateway import access, headers, keys, metrics, websocket
from gateway.connection import ConnectionClosed
from gateway.errors import NotFound, ServiceBusy
from gateway.pages import login_required
from gateway.routes import RESERVED_PREFIXES

_NO_BODY_STATUSES = frozenset({204, 304})
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "DELETE", "TRACE"})


_RESERVED_SEGMENTS = frozenset(prefix.strip("/") for prefix in RESERVED_PREFIXES)


def _is_reserved(path: str) -> bool:
    return path.split("/", 2)[1] in _RESERVED_SEGMENTS


def _has_body(request: web.Request) -> bool:
    if request.headers.get("Transfer-Encoding") is not None:
        return True
    length = request.content_length
    if length:
        return True
    return request.method not in _BODYLESS_METHODS and length is None and request.body_exists


async def handle(request: web.Request) -> web.StreamResponse:
    target = request[keys.TARGET]
    if _is_reserved(target.path):
        raise NotFound()
    route = request.app[keys.ROUTES].table.match(target.path)
    if route is None:
        if target.path == "/":
            # No service claims the front door: the patron's own page is the landing
            # (it sends anonymous visitors on to the login).
            raise web.HTTPFound("/auth/account")
        raise NotFound()
    request[keys.ROUTE] = route.name
    authenticator = request.app[keys.AUTHENTICATOR]
    identity = await authenticator.identify(request)
    decision = access.decide(
        route, target.path, target.query,
        logged_in=identity is not None, accept=request.headers.get("Accept"),
    )
    if isinstance(decision, access.LoginRequired):
        return login_required(decision)
    if identity is not None:
        request[keys.USER_ID] = identity.user_id

    settings = request.app[keys.SETTINGS]
    upgrade = websocket.is_upgrade(request)
    upstream_headers = headers.upstream_request_headers(
        request.headers,
        backend_host=route.backend.host_header,
        forwarded_for=request[keys.FORWARDED_FOR],
        public_proto=settings.public_proto,
        public_host=settings.public_host,
        request_id=request[keys.REQUEST_ID],
        cookie_name=authenticator.cookie_name,
        identity=_identity_headers(authenticator, identity, route.name),
        websocket=upgrade,
    )
    upstream_target = route.upstream_path(target.path)
    if target.query:
        upstream_target += "?" + target.query
    if upgrade:
        url = route.backend.origin + upstream_target
        return await websocket.bridge(request, route, url, upstream_headers)

    upstream = request.app[keys.UPSTREAM]
    body = request if _has_body(request) else None
    asked = time.perf_counter()
    _, overhead, upstream_time = metrics.route_histograms(route.name)
    overhead.observe(asked - request[keys.STARTED])
    answer, connection = await upstream.request(
        route, request.method, upstream_target, upstream_headers, body
    )
    try:
        upstream_time.observe(time.perf_counter() - asked)
        response_headers, length = headers.downstream_response_headers(
            answer.headers, cookie_name=authenticator.cookie_name
        )
        streams = request.method == "HEAD" or answer.status in _NO_BODY_STATUSES
        whole = None if streams else connection.whole_body()
        if whole is not None and (length is None or length == len(whole)):
            # The common small answer arrived in one piece: head and body go out together.
            small = web.Response(status=answer.status, reason=answer.reason,
                                 headers=response_headers, body=whole)
            await authenticator.finish(request, small)
            return small
        response = web.StreamResponse(
            status=answer.status, reason=answer.reason, headers=response_headers
        )
        if length is not None:
            response.content_length = length
        await authenticator.finish(request, response)
        await response.prepare(request)
        if not streams:
            await _pump(request, connection.body(), response)
        await response.write_eof()
        return response
    except BaseException:
        connection.close()
        raise
    finally:
        upstream.release(route, connection)


def _identity_headers(
    authenticator: Authenticator, identity: Identity | None, audience: str
) -> dict[str, str]:
    if identity is None:
        return {}
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
