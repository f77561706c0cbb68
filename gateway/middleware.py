"""The steps every request takes, the middleware that takes them for the application, and
the headers every response carries.

1. context  request id, the client's address (trusting X-Forwarded-For only from configured
            proxies) and the normalised target, kept in one `Exchange` on the request
            (`open_exchange`)
2. dispatch proxied requests to the proxy; the gateway's own pages on through the rest of the
            application (aiohttp-session's middleware, then the page's handler)
3. errors   every failure becomes a small page or JSON; no stack trace ever reaches a client
4. measure  counts and times the request for Prometheus, by route and final status
            (3 and 4 are `answer`)

Proxied requests take these steps in `gateway.front`, before the application; the `gateway`
middleware takes them for the pages, and for anything the application's catch-all route
still gets (a reserved path nothing serves, a refused target). Headers every application
response carries (request id, Server, nosniff, HSTS, and the pages' security headers) are set
in the response signal made by `response_stamp`, so they also reach streamed responses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from auth.pages import page_headers
from gateway import headers, keys, metrics, proxy
from gateway.errors import BadRequest, GatewayError, UpstreamError, UpstreamTimeout
from gateway.logs import request_id_var
from gateway.pages import error_response
from gateway.paths import BadPath, normalise
from gateway.settings import Settings

log = logging.getLogger("gateway")

PROXY_ROUTE = "proxy"


def gateway(settings: Settings) -> Middleware:
    trusted = settings.trusted_proxies

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        exchange = open_exchange(request, trusted)
        proxied = request.match_info.route.name == PROXY_ROUTE
        if not proxied:
            request[keys.CLIENT_ADDRESS] = exchange.client_address  # the pages' throttle
        return await answer(request, exchange, _through(request, exchange, handler, proxied),
                            unrouted="_unmatched" if proxied else "_gateway")

    return middleware


async def _through(request: web.Request, exchange: keys.Exchange, handler: Handler,
                   proxied: bool) -> web.StreamResponse:
    try:
        exchange.target = keys.Target(*normalise(request.raw_path))
    except BadPath as exc:
        raise BadRequest(str(exc)) from None
    if proxied:
        return await request.app[proxy.PROXY].handle(request, exchange)
    return await handler(request)


async def answer(request: web.Request, exchange: keys.Exchange,
                 respond: Awaitable[web.StreamResponse], *, unrouted: str) -> web.StreamResponse:
    """The response `respond` gives, with every failure made a small page (no stack trace
    ever reaches a client), counted and timed for Prometheus under the route that took the
    request, or `unrouted`."""
    status = 500
    try:
        try:
            response = await respond
        except GatewayError as exc:
            response = _error_page(request, exc)
        except (web.HTTPException, ConnectionResetError):
            raise
        except Exception:
            log.exception("unhandled error")
            response = error_response(500, "Something went wrong",
                                      "The gateway could not handle this request.",
                                      request.headers.get("Accept"))
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = exchange.route or unrouted
        metrics.requests_child(route, request.method, status).inc()
        metrics.route_histograms(route)[0].observe(time.perf_counter() - exchange.started)


def open_exchange(request: web.Request, trusted: tuple[headers.Network, ...]) -> keys.Exchange:
    """The request's `Exchange`: its id (also set for the logs), the client's address and
    the X-Forwarded-For chain to pass on."""
    rid = headers.request_id(request.headers.get("X-Request-Id"))
    request_id_var.set(rid)
    peer = request.remote or "unknown"  # the socket peer, as aiohttp keeps it per connection
    if trusted:
        forwarded = ", ".join(request.headers.getall("X-Forwarded-For", ())) or None
        chain = ", ".join(headers.forwarded_chain(peer, forwarded, trusted))
        client = headers.client_address(peer, forwarded, trusted)
    else:
        chain = client = peer
    exchange = keys.Exchange(time.perf_counter(), rid, client, chain)
    request[keys.EXCHANGE] = exchange
    return exchange


def _error_page(request: web.Request, exc: GatewayError) -> web.Response:
    if isinstance(exc, UpstreamError):
        kind = "timeout" if isinstance(exc, UpstreamTimeout) else "unavailable"
        metrics.UPSTREAM_ERRORS.labels(exc.route, kind).inc()
    if exc.status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc.reason,
                    extra={"route": getattr(exc, "route", None), "status": exc.status})
    return error_response(exc.status, exc.title, exc.reason, request.headers.get("Accept"))


def response_stamp(
    settings: Settings,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """The on_response_prepare handler: what every response of the application carries."""
    https = settings.https

    async def stamp(request: web.Request, response: web.StreamResponse) -> None:
        exchange = request.get(keys.EXCHANGE)
        headers.stamp_response(response.headers,
                               exchange.request_id if exchange is not None else None, https)
        if request.path.startswith("/auth/"):
            page_headers(request, response)

    return stamp
