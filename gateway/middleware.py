"""The gateway's one middleware, and the headers every response carries.

`gateway` runs for every request, in this order:

1. context  request id, the client's address (trusting X-Forwarded-For only from configured
            proxies) and the normalised target, kept in one `Exchange` on the request
2. dispatch proxied requests go straight to the proxy; the gateway's own pages go on through
            the rest of the stack (aiohttp-session's middleware, then the page's handler)
3. errors   every failure becomes a small page or JSON; no stack trace ever reaches a client
4. measure  counts and times the request for Prometheus, by route and final status

It is one middleware rather than one per concern because the proxy path runs it for every
request of every patron, and each layer costs a coroutine there. Headers every response carries
(request id, Server, nosniff, HSTS, and the pages' security headers) are set in the response
signal made by `response_stamp`, so they also reach streamed and WebSocket responses.
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
        exchange = _exchange(request, trusted)
        proxied = request.match_info.route.name == PROXY_ROUTE
        if not proxied:
            request[keys.CLIENT_ADDRESS] = exchange.client_address  # the pages' throttle
        status = 500
        try:
            try:
                try:
                    exchange.target = keys.Target(*normalise(request.raw_path))
                except BadPath as exc:
                    raise BadRequest(str(exc)) from None
                if proxied:
                    response = await request.app[proxy.PROXY].handle(request, exchange)
                else:
                    response = await handler(request)
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
            route = exchange.route or ("_unmatched" if proxied else "_gateway")
            metrics.requests_child(route, request.method, status).inc()
            metrics.route_histograms(route)[0].observe(time.perf_counter() - exchange.started)

    return middleware


def _exchange(request: web.Request, trusted: tuple[headers.Network, ...]) -> keys.Exchange:
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
    """The on_response_prepare handler: what every response carries."""
    https = settings.https

    async def stamp(request: web.Request, response: web.StreamResponse) -> None:
        out = response.headers
        out["Server"] = "library-gateway"
        out.setdefault("X-Content-Type-Options", "nosniff")
        exchange = request.get(keys.EXCHANGE)
        if exchange is not None:
            out["X-Request-Id"] = exchange.request_id
        if https:
            out.setdefault("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
        if request.path.startswith("/auth/"):
            page_headers(request, response)

    return stamp
