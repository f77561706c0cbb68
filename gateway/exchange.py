"""One request's way through the gateway, from the socket to its answer.

Every request, proxied or a page, takes the same steps, opened here by `open_exchange` (in
`gateway.server.front`, the one way in) and closed by `guarded`:

1. context  request id, the client's address (X-Forwarded-For is believed only from configured
            proxies), the W3C trace and the normalised target, kept in one `Exchange` on the
            request; with spans exported (`gateway.ops.tracing`), the request's span starts
2. respond  the proxy (`gateway.proxy.handler`) or the application's page handler
3. errors   every failure becomes a small page or JSON; no stack trace ever reaches a client
4. measure  counts and times the request for Prometheus, by route and final status, and ends
            its span
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, NamedTuple

from aiohttp import web

from auth.store.availability import unavailable
from gateway.error_pages import error_response
from gateway.errors import (
    GatewayError,
    MethodNotAllowed,
    ServiceUnavailable,
    UpstreamError,
    UpstreamTimeout,
)
from gateway.ops import metrics
from gateway.proxy import headers

if TYPE_CHECKING:
    from gateway.ops.tracing import RequestSpans, Tracing

log = logging.getLogger("gateway")

# The id of the request the running task serves: every log line carries it.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)


class Target(NamedTuple):
    """The normalised request target: what is matched and what the backend receives."""

    path: str
    query: str


class Exchange:
    """What the gateway learns about one request on its way through, kept in one object
    (one request key instead of seven: the proxy path reads and writes these constantly).

    `target` is None only for a request whose path was refused (`refusal` says why)."""

    __slots__ = (
        "client_address",
        "forwarded_for",
        "refusal",
        "request_id",
        "route",
        "spans",
        "started",
        "target",
        "trace",
        "user_id",
    )

    def __init__(
        self, started: float, request_id: str, client_address: str, forwarded_for: str
    ) -> None:
        self.started = started
        self.request_id = request_id
        self.client_address = client_address
        self.forwarded_for = forwarded_for
        self.target: Target | None = None
        self.refusal: str | None = None
        self.route: str | None = None
        self.user_id: str | None = None
        self.trace: headers.TraceContext | None = None
        # The request's spans while they are exported (gateway.ops.tracing), else None.
        self.spans: RequestSpans | None = None


EXCHANGE = web.RequestKey("exchange", Exchange)


def open_exchange(
    request: web.Request, trusted: tuple[headers.Network, ...], tracing: Tracing | None = None
) -> Exchange:
    """The request's `Exchange`: its id (also set for the logs), the client's address, the
    X-Forwarded-For chain to pass on, its trace and, with `tracing`, its span."""
    rid = headers.request_id(request.headers.get("X-Request-Id"))
    request_id_var.set(rid)
    peer = request.remote or "unknown"  # the socket peer, as aiohttp keeps it per connection
    if trusted:
        forwarded = ", ".join(request.headers.getall("X-Forwarded-For", ())) or None
        chain = ", ".join(headers.forwarded_chain(peer, forwarded, trusted))
        client = headers.client_address(peer, forwarded, trusted)
    else:
        chain = client = peer
    exchange = Exchange(time.perf_counter(), rid, client, chain)
    exchange.trace = headers.trace_context(
        request.headers.get("traceparent"),
        request.headers.get("tracestate"),
        trusted_peer=bool(trusted) and headers.is_trusted(peer, trusted),
    )
    if tracing is not None:
        exchange.spans = tracing.request(request, exchange)
    request[EXCHANGE] = exchange
    return exchange


async def guarded(
    request: web.Request,
    exchange: Exchange,
    respond: Awaitable[web.StreamResponse],
    *,
    unrouted: str,
) -> web.StreamResponse:
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
        except Exception as exc:
            response = _failure_page(request, exc, exchange.route or unrouted)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        route = exchange.route or unrouted
        metrics.requests_child(route, request.method, status).inc()
        metrics.route_histograms(route)[0].observe(time.perf_counter() - exchange.started)
        if exchange.spans is not None:
            exchange.spans.finish(request, status)


def _failure_page(request: web.Request, exc: Exception, route: str) -> web.Response:
    """The page for an exception that is not the gateway's own: 503 when the database is
    away (never a login page, never a 500), else 500."""
    if unavailable(exc):
        metrics.DATABASE_UNAVAILABLE.labels(route).inc()
        unreachable = ServiceUnavailable(
            "The library's accounts cannot be reached just now. Please try again in a moment."
        )
        unreachable.__cause__ = exc
        return _error_page(request, unreachable)
    log.exception("unhandled error")
    return error_response(request, GatewayError("The gateway could not handle this request."))


def _error_page(request: web.Request, exc: GatewayError) -> web.Response:
    if isinstance(exc, UpstreamError):
        kind = "timeout" if isinstance(exc, UpstreamTimeout) else "unavailable"
        metrics.UPSTREAM_ERRORS.labels(exc.route, kind).inc()
    if exc.status >= 500:
        log.warning(
            "%s: %s",
            type(exc).__name__,
            exc.reason,
            extra={
                "route": getattr(exc, "route", None),
                "status": exc.status,
                "error": repr(exc.__cause__) if exc.__cause__ is not None else None,
            },
        )
    response = error_response(request, exc)
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, MethodNotAllowed):
        response.headers["Allow"] = exc.allow
    return response
