"""What Prometheus reads on the admin port: the per-request series are counted in batches
(gateway.metrics), and a scrape must still show every request answered before it."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient

from gateway.ops import metrics
from gateway.ops.admin import create_admin_app
from tests.helpers import Gateway

Admin = TestClient[web.Request, web.Application]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def admin(gw: Gateway, aiohttp_client: AiohttpClient) -> Admin:
    return await aiohttp_client(create_admin_app(gw.app))


async def scrape(admin: Admin) -> Samples:
    resp = await admin.get("/metrics")
    assert resp.status == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(await resp.text())
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_a_scrape_counts_every_request_answered_before_it(gw: Gateway, admin: Admin) -> None:
    before = await scrape(admin)
    for _ in range(7):
        resp = await gw.get("/catalogue/shelf")
        assert resp.status == 200
    resp = await gw.post("/catalogue/shelf", data=b"x")
    assert resp.status == 200
    after = await scrape(admin)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("gateway_requests_total", route="catalogue", method="read", status="200") == 7
    assert grew("gateway_requests_total", route="catalogue", method="write", status="200") == 1
    for histogram in (
        "gateway_request_duration_seconds",
        "gateway_overhead_seconds",
        "gateway_upstream_seconds",
    ):
        assert grew(f"{histogram}_count", route="catalogue") == 8
        assert grew(f"{histogram}_bucket", route="catalogue", le="+Inf") == 8
        assert grew(f"{histogram}_sum", route="catalogue") > 0


UNUSUAL_METHODS = [
    "PROPFIND",
    "PROPPATCH",
    "MKCOL",
    "COPY",
    "MOVE",
    "LOCK",
    "UNLOCK",
    "SEARCH",
    "REPORT",
    "MKACTIVITY",
    "CHECKOUT",
    "MERGE",
    "NOTIFY",
    "SUBSCRIBE",
    "UNSUBSCRIBE",
    "PURGE",
    "MKCALENDAR",
    "LINK",
    "UNLINK",
]


async def test_unusual_methods_share_one_series(gw: Gateway, admin: Admin) -> None:
    """Label values stay bounded: however many methods a client tries, they make one series
    (and no new memory in the gateway)."""
    before = await scrape(admin)
    for method in UNUSUAL_METHODS:
        resp = await gw.request(method, "/catalogue/pot")
        assert resp.status == 200
    after = await scrape(admin)
    new_series = {
        labels for name, labels in after.keys() - before.keys() if name == "gateway_requests_total"
    }
    assert new_series <= {
        frozenset({("route", "catalogue"), ("method", "other"), ("status", "200")})
    }
    assert value(
        after, "gateway_requests_total", route="catalogue", method="other", status="200"
    ) - value(
        before, "gateway_requests_total", route="catalogue", method="other", status="200"
    ) == len(UNUSUAL_METHODS)


@pytest.mark.parametrize(
    "observations",
    [
        [0.0012, 0.0004, 0.02, 0.02, 3.0],
        # On a bucket's bound, and past the last one.
        [0.0005, 0.005, 30.0, 31.0, 1e9],
        [],
    ],
)
def test_a_batched_histogram_reads_as_prometheus_clients_own(observations: list[float]) -> None:
    """The batch is added to prometheus-client's series through its internals (there is no
    public call for many observations at once): this pins that the two agree."""
    registry = CollectorRegistry()
    observed = Histogram("observed", "x", ["route"], buckets=metrics._BUCKETS, registry=registry)
    batched = Histogram("batched", "x", ["route"], buckets=metrics._BUCKETS, registry=registry)
    own = observed.labels("r")
    batch = metrics.BatchedLatency(batched.labels("r"))
    for seconds in observations:
        own.observe(seconds)
        batch.observe(seconds)
    batch.flush()
    batch.flush()  # a second flush adds nothing

    def lines(name: str) -> list[str]:
        return [
            line.replace(name, "h", 1)
            for line in generate_latest(registry).decode().splitlines()
            if line.startswith(name) and "_created" not in line
        ]

    assert lines("observed")
    assert lines("observed") == lines("batched")
