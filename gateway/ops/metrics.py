"""The gateway's Prometheus metrics, declared once, and their exposition on the admin port.

Latency is split the way operators need it: `gateway_overhead_seconds` is the gateway's own
work before the backend is asked (cookie, decision, headers), `gateway_upstream_seconds` the
backend's time to answer, `gateway_request_duration_seconds` the whole request including the
streamed body. With `--workers N` the values of every worker are summed through
prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by the supervisor).

The per-request series are counted in batches. prometheus-client takes a lock and walks the
buckets for every observation (in multiprocess mode it writes a memory-mapped file too), four
times for each proxied request; here a request adds to plain numbers (the event loop is one
thread) and `flush` hands the totals over when /metrics is read, and once a second for the
other workers' sake, so what a scrape sees is at most a second old.
"""

from __future__ import annotations

import asyncio
import bisect
import functools
import logging
import os
from collections.abc import AsyncIterator

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

log = logging.getLogger("gateway.metrics")

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUESTS = Counter(
    "gateway_requests_total",
    "Requests by route, method class and status",
    ["route", "method", "status"],
)
DURATION = Histogram(
    "gateway_request_duration_seconds", "Whole request, body included", ["route"], buckets=_BUCKETS
)
OVERHEAD = Histogram(
    "gateway_overhead_seconds",
    "The gateway's own time before calling the backend",
    ["route"],
    buckets=_BUCKETS,
)
UPSTREAM = Histogram(
    "gateway_upstream_seconds", "Backend time to response headers", ["route"], buckets=_BUCKETS
)
UPSTREAM_ERRORS = Counter("gateway_upstream_errors_total", "Backend failures", ["route", "kind"])
DATABASE_UNAVAILABLE = Counter(
    "gateway_database_unavailable_total",
    "Requests answered 503 because the account database could not be asked in time",
    ["route"],
)
RELOADS = Counter("gateway_route_reloads_total", "Route map reloads", ["result"])
OUTBOX_DEPTH = Gauge(
    "gateway_mail_outbox_depth", "Mails waiting to be sent", multiprocess_mode="max"
)
BACKCHANNEL_PENDING = Gauge(
    "gateway_backchannel_logouts_pending",
    "Back-channel logouts waiting to be delivered",
    multiprocess_mode="max",
)
POOL_CONNECTIONS = Gauge(
    "gateway_db_pool_connections",
    "Database pool connections",
    ["state"],
    multiprocess_mode="livesum",
)

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


FLUSH_EVERY = 1.0


class BatchedCount:
    """A counter series that is counted here and added to prometheus-client's by `flush`."""

    __slots__ = ("_child", "_pending")

    def __init__(self, child: Counter) -> None:
        self._child = child
        self._pending = 0

    def inc(self) -> None:
        self._pending += 1

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, 0
            self._child.inc(pending)


class BatchedLatency:
    """A histogram series that is counted here and added to prometheus-client's by `flush`."""

    __slots__ = ("_child", "_counts", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._child = child
        self._counts = [0] * (len(_BUCKETS) + 1)  # the last one is +Inf
        self._sum = 0.0

    def observe(self, seconds: float) -> None:
        # A bucket counts the values up to and including its bound, as prometheus-client's.
        self._counts[bisect.bisect_left(_BUCKETS, seconds)] += 1
        self._sum += seconds

    def flush(self) -> None:
        counts = self._counts
        if not any(counts):
            return
        total, self._sum = self._sum, 0.0
        self._counts = [0] * len(counts)
        # prometheus-client has no public call that adds many observations at once; these are
        # the values its own observe() adds to (test_metrics pins that the two agree).
        self._child._sum.inc(total)
        for bucket, count in zip(self._child._buckets, counts, strict=True):
            if count:
                bucket.inc(count)


_COUNTS: dict[tuple[str, str, str], BatchedCount] = {}
_LATENCIES: dict[str, tuple[BatchedLatency, BatchedLatency, BatchedLatency]] = {}


@functools.lru_cache(maxsize=4096)
def requests_child(route: str, method: str, status: int) -> BatchedCount:
    # The memo saves building the labels; the dict keeps one series per label set however
    # many invented methods push entries out of the memo.
    labels = (route, method_class(method), str(status))
    count = _COUNTS.get(labels)
    if count is None:
        count = _COUNTS[labels] = BatchedCount(REQUESTS.labels(*labels))
    return count


def route_histograms(route: str) -> tuple[BatchedLatency, BatchedLatency, BatchedLatency]:
    """(whole request, gateway overhead, upstream time) for a route."""
    latencies = _LATENCIES.get(route)
    if latencies is None:
        latencies = _LATENCIES[route] = (
            BatchedLatency(DURATION.labels(route)),
            BatchedLatency(OVERHEAD.labels(route)),
            BatchedLatency(UPSTREAM.labels(route)),
        )
    return latencies


def flush() -> None:
    """Hand everything counted since the last flush to prometheus-client."""
    for count in _COUNTS.values():
        count.flush()
    for latencies in _LATENCIES.values():
        for latency in latencies:
            latency.flush()


async def flushing(_app: web.Application) -> AsyncIterator[None]:
    """A cleanup context: flush once a second while serving, and once more at the end."""

    async def every_second() -> None:
        while True:
            await asyncio.sleep(FLUSH_EVERY)
            try:
                flush()
            except Exception:  # a full disk under the multiprocess files, say: keep counting
                log.exception("could not hand the request metrics to prometheus-client")

    task = asyncio.create_task(every_second())
    try:
        yield
    finally:
        task.cancel()
        flush()


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
    flush()
    body = generate_latest(_registry())
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
