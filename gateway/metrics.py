"""The gateway's Prometheus metrics, declared once, and their exposition on the admin port.

Latency is split the way operators need it: `gateway_overhead_seconds` is the gateway's own
work before the backend is asked (cookie, decision, headers), `gateway_upstream_seconds` the
backend's time to answer, `gateway_request_duration_seconds` the whole request including the
streamed body. With `--workers N` the values of every worker are summed through
prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by the supervisor).
"""

from __future__ import annotations

import functools
import os

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUESTS = Counter("gateway_requests_total", "Requests by route, method class and status",
                   ["route", "method", "status"])
DURATION = Histogram("gateway_request_duration_seconds", "Whole request, body included",
                     ["route"], buckets=_BUCKETS)
OVERHEAD = Histogram("gateway_overhead_seconds",
                     "The gateway's own time before calling the backend", ["route"],
                     buckets=_BUCKETS)
UPSTREAM = Histogram("gateway_upstream_seconds", "Backend time to response headers",
                     ["route"], buckets=_BUCKETS)
UPSTREAM_ERRORS = Counter("gateway_upstream_errors_total", "Backend failures",
                          ["route", "kind"])
RELOADS = Counter("gateway_route_reloads_total", "Route map reloads", ["result"])
OUTBOX_DEPTH = Gauge("gateway_mail_outbox_depth", "Mails waiting to be sent",
                     multiprocess_mode="max")
POOL_CONNECTIONS = Gauge("gateway_db_pool_connections", "Database pool connections",
                         ["state"], multiprocess_mode="livesum")

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


# The label look-up of prometheus-client takes a lock and builds a key on every call; these
# memos hand back the same child series for the same labels (all of them bounded sets).
@functools.lru_cache(maxsize=4096)
def requests_child(route: str, method: str, status: int) -> Counter:
    return REQUESTS.labels(route, method_class(method), str(status))


@functools.lru_cache(maxsize=1024)
def route_histograms(route: str) -> tuple[Histogram, Histogram, Histogram]:
    """(whole request, gateway overhead, upstream time) for a route."""
    return DURATION.labels(route), OVERHEAD.labels(route), UPSTREAM.labels(route)


def method_class(method: str) -> str:
    """Bounded label values: an attacker's invented methods must not create new series."""
    if method in _READ_METHODS:
        return "read"
    if method in ("POST", "PUT", "PATCH", "DELETE"):
        return "write"
    return "other"


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


async def metrics(_request: web.Request) -> web.Response:
    body = generate_latest(_registry())
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
