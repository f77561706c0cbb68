"""The middleware stack, in the one order it runs (outermost first, see `STACK`).

1. measure  counts and times every request for Prometheus, by route and final status
2. errors   every failure becomes a small page or JSON; no stack trace ever reaches a client
3. context  request id, the normalised target, the client's address (trusting X-Forwarded-For
            only from configured proxies)
Headers every response carries (request id, Server, nosniff, HSTS) are set in `on_prepare`, a
response signal, so they also reach streamed and WebSocket responses.
"""

from __future__ import annotations

import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from gateway import headers, keys, metrics
from gateway.errors import BadRequest, GatewayError, UpstreamError, UpstreamTimeout
from gateway.logs import request_id_var
from gateway.pages import error_response
from gateway.paths import BadPath, normalise

log = logging.getLogger("gateway")


@web.middleware
async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
    request[keys.STARTED] = started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = request.get(keys.ROUTE) or (
            "_gateway" if request.match_info.route.name != "proxy" else "_unmatched")
        metrics.requests_child(route, request.method, status).inc()
        metrics.route_histograms(route)[0].observe(time.perf_counter() - started)


@web.middleware
async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        if isinstance(exc, UpstreamError):
            kind = "timeout" if isinstance(exc, UpstreamTimeout) else "unavailable"
            metrics.UPSTREAM_ERRORS.labels(exc.route, kind).inc()
        if exc.status >= 500:
            log.warning("%s: %s", type(exc).__name__, exc.reason,
                        extra={"route": getattr(exc, "route", None), "status": exc.status})
        return error_response(exc.status, exc.title, exc.reason, request.headers.get("Accept"))
    except web.HTTPException:
        raise
    except ConnectionResetError:
        raise
    except Exception:
        log.exception("unhandled error")
        return error_response(500, "Something went wrong",
                              "The gateway could not handle this request.",
                              request.headers.get("Accept"))


@web.middleware
async def context(request: web.Request, handler: Handler) -> web.StreamResponse:
    rid = headers.request_id(request.headers.get("X-Request-Id"))
    request[keys.REQUEST_ID] = rid
    request_id_var.set(rid)
    settings = request.app[keys.SETTINGS]
    peer = _peer(request)
    forwarded = ", ".join(request.headers.getall("X-Forwarded-For", ())) or None
    request[keys.FORWARDED_FOR] = ", ".join(
        headers.forwarded_chain(peer, forwarded, settings.trusted_proxies)
    )
    request[keys.CLIENT_ADDRESS] = headers.client_address(
        peer, forwarded, settings.trusted_proxies
    )
    try:
        path, query = normalise(request.raw_path)
    except BadPath as exc:
        raise BadRequest(str(exc)) from None
    request[keys.TARGET] = keys.Target(path, query)
    return await handler(request)


def _peer(request: web.Request) -> str:
    transport = request.transport
    peername = transport.get_extra_info("peername") if transport is not None else None
    if isinstance(peername, tuple) and peername:
        return str(peername[0])
    return "unknown"


STACK = (measure, errors, context)


async def on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = "library-gateway"
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    rid = request.get(keys.REQUEST_ID)
    if rid is not None:
        response.headers["X-Request-Id"] = rid
    if request.app[keys.SETTINGS].https:
        response.headers.setdefault(
            "Strict-Transport-Security", "max-age=63072000; includeSubDomains"
        )
