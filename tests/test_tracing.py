"""Spans exported over OTLP/HTTP to a real receiver, and nothing of OpenTelemetry without it.

The receiver is an aiohttp server on loopback that takes `POST /v1/traces` and decodes each
body with opentelemetry-proto's own classes, the way a collector does. The gateway is the real
one, pointed at it by the standard variables, with batches sent every 50 ms; every test waits
for the spans it needs (a condition with a deadline), never for a fixed time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from pytest_aiohttp import AiohttpServer

from auth.credentials.passwords import PasswordHasher
from gateway.config.settings import SettingsError
from gateway.ops import tracing
from tests.helpers import (
    PASSWORD,
    ROOT,
    Gateway,
    MakeGateway,
    add_patron,
    cli,
    free_port,
    jar_cookie,
    login,
    received,
    routes_for,
)

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
SERVER, CLIENT = Span.SpanKind.SPAN_KIND_SERVER, Span.SpanKind.SPAN_KIND_CLIENT
TRUSTED = {"GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32"}
API_KEY = "k3y-that-must-never-be-logged"


class Collector:
    """An OTLP/HTTP receiver that keeps every span, raw body and request head it gets."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.bodies: list[bytes] = []
        self.heads: list[dict[str, str]] = []
        self.service_names: set[str] = set()
        self._arrived = asyncio.Condition()

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        export = ExportTraceServiceRequest.FromString(body)
        async with self._arrived:
            self.bodies.append(body)
            self.heads.append({k.lower(): v for k, v in request.headers.items()})
            for resource_spans in export.resource_spans:
                for item in resource_spans.resource.attributes:
                    if item.key == "service.name":
                        self.service_names.add(item.value.string_value)
                for scope_spans in resource_spans.scope_spans:
                    self.spans.extend(scope_spans.spans)
            self._arrived.notify_all()
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    async def wait_for(self, found: Callable[[list[Span]], bool], deadline: float = 20) -> None:
        async with asyncio.timeout(deadline), self._arrived:
            await self._arrived.wait_for(lambda: found(self.spans))

    async def trace(self, trace_id: str, count: int) -> list[Span]:
        """The spans of one trace, once `count` of them have arrived."""
        wanted = bytes.fromhex(trace_id)
        await self.wait_for(lambda spans: sum(s.trace_id == wanted for s in spans) >= count)
        return [span for span in self.spans if span.trace_id == wanted]


def attributes(span: Span) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in span.attributes:
        kind = item.value.WhichOneof("value")
        out[item.key] = getattr(item.value, kind) if kind else None
    return out


def named(spans: list[Span], name: str) -> Span:
    [span] = [span for span in spans if span.name == name]
    return span


def traceparent_seen(payload: dict[str, Any]) -> tuple[str, str, str]:
    [value] = received(payload)["traceparent"]
    version, trace_id, parent, flags = value.split("-")
    assert version == "00"
    return trace_id, parent, flags


@pytest.fixture
async def collector(aiohttp_server: AiohttpServer) -> tuple[Collector, TestServer]:
    receiver = Collector()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.receive)
    return receiver, await aiohttp_server(app)


@pytest.fixture
def otel_env(
    monkeypatch: pytest.MonkeyPatch, collector: tuple[Collector, TestServer]
) -> Iterator[None]:
    """The standard variables, pointing at the receiver; anything else OTEL_* the machine
    has set is taken away for the test."""
    for name in os.environ:
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector[1].port}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", f"x-api-key={API_KEY}")
    yield


@pytest.fixture
async def traced(otel_env: None) -> AsyncIterator[tracing.Tracing]:
    made = tracing.from_environment("http://127.0.0.1")
    assert made is not None
    yield made
    await made.close()  # the app closes it too; a second close does nothing


@pytest.fixture
async def traced_gw(
    make_gateway: MakeGateway, backend: TestServer, traced: tracing.Tracing
) -> Gateway:
    """A gateway that exports its spans and believes trace context from loopback, as
    behind a load balancer: the test client plays the load balancer."""
    return await make_gateway(routes_for(backend.port), env=TRUSTED, tracing=traced)


async def test_a_trusted_proxys_trace_is_continued_in_the_exported_spans(
    traced_gw: Gateway,
    collector: tuple[Collector, TestServer],
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
) -> None:
    patron = await add_patron(pool, hasher)
    assert (await login(traced_gw, patron.username)).status == 303
    resp = await traced_gw.get(
        "/reservations/mine",
        headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01", "Accept": "text/html"},
    )
    assert resp.status == 200
    spans = await collector[0].trace(CLIENT_TRACE, 3)

    [request] = [span for span in spans if span.kind == SERVER]
    assert request.parent_span_id.hex() == CLIENT_SPAN
    assert request.name == "GET reservations"
    seen = attributes(request)
    assert seen["http.request.method"] == "GET"
    assert seen["http.route"] == "reservations"
    assert seen["http.response.status_code"] == 200
    assert seen["url.path"] == "/reservations/mine"

    session = named(spans, "session check")
    assert session.parent_span_id == request.span_id
    assert attributes(session)["library_gateway.session.logged_in"] is True
    [upstream] = [span for span in spans if span.kind == CLIENT]
    assert upstream.parent_span_id == request.span_id
    assert attributes(upstream)["http.response.status_code"] == 200

    # The backend's spans hang under the gateway's call to it.
    trace_id, parent, flags = traceparent_seen(await resp.json())
    assert (trace_id, parent, flags) == (CLIENT_TRACE, upstream.span_id.hex(), "01")
    assert collector[0].service_names == {"library-gateway"}


async def test_an_untrusted_clients_trace_is_not_continued_in_the_spans(
    make_gateway: MakeGateway,
    backend: TestServer,
    traced: tracing.Tracing,
    collector: tuple[Collector, TestServer],
) -> None:
    gw = await make_gateway(routes_for(backend.port), tracing=traced)  # trusts no proxy
    resp = await gw.get("/open/x", headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
    assert resp.status == 200
    trace_id, parent, _flags = traceparent_seen(await resp.json())
    assert trace_id != CLIENT_TRACE
    spans = await collector[0].trace(trace_id, 3)
    [request] = [span for span in spans if span.kind == SERVER]
    assert request.parent_span_id == b""  # a trace of the gateway's own
    [upstream] = [span for span in spans if span.kind == CLIENT]
    assert upstream.span_id.hex() == parent
    assert all(span.trace_id.hex() != CLIENT_TRACE for span in collector[0].spans)


async def test_a_trace_the_proxy_did_not_sample_is_neither_exported_nor_sampled_onward(
    traced_gw: Gateway, collector: tuple[Collector, TestServer]
) -> None:
    unsampled = "4bf92f3577b34da6a3ce929d0e0e4736"
    resp = await traced_gw.get(
        "/open/x", headers={"traceparent": f"00-{unsampled}-{CLIENT_SPAN}-00"}
    )
    trace_id, _parent, flags = traceparent_seen(await resp.json())
    assert (trace_id, flags) == (unsampled, "00")
    # A sampled request after it: its spans arriving means the earlier ones would have too
    # (spans are queued as they end, and sent in order).
    resp = await traced_gw.get(
        "/open/y", headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}
    )
    assert resp.status == 200
    await collector[0].trace(CLIENT_TRACE, 3)
    assert all(span.trace_id.hex() != unsampled for span in collector[0].spans)


async def test_a_login_checks_the_password_in_a_span_under_its_request(
    traced_gw: Gateway,
    collector: tuple[Collector, TestServer],
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
) -> None:
    patron = await add_patron(pool, hasher)
    assert (await login(traced_gw, patron.username)).status == 303

    def has_login(spans: list[Span]) -> bool:
        return any(span.name == "POST /auth/login" for span in spans) and any(
            span.name == "password verification" for span in spans
        )

    await collector[0].wait_for(has_login)
    request = named(collector[0].spans, "POST /auth/login")
    checked = named(collector[0].spans, "password verification")
    assert checked.trace_id == request.trace_id
    assert checked.parent_span_id == request.span_id
    # Timed on the event loop around the thread pool's work: within its request.
    assert request.start_time_unix_nano <= checked.start_time_unix_nano
    assert checked.end_time_unix_nano <= request.end_time_unix_nano
    assert attributes(request)["http.response.status_code"] == 303
    assert attributes(request)["http.route"] == "/auth/login"


async def test_no_span_carries_the_cookie_the_password_or_a_query_string(
    traced_gw: Gateway,
    collector: tuple[Collector, TestServer],
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
) -> None:
    patron = await add_patron(pool, hasher)
    assert (await login(traced_gw, patron.username)).status == 303
    cookie = jar_cookie(traced_gw)
    assert cookie is not None
    query_marker = "q7-query-marker"
    backend_cookie = "backend-cookie-marker"
    resp = await traced_gw.get(
        f"/reservations/search?term={query_marker}",
        headers={
            "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
            "Cookie": f"library_session={cookie}; theme={backend_cookie}",
            "Accept": "application/json",
        },
    )
    assert resp.status == 200
    assert query_marker in (await resp.json())["path"]  # the backend got the query
    await collector[0].trace(CLIENT_TRACE, 3)
    await collector[0].wait_for(
        lambda spans: any(span.name == "password verification" for span in spans)
    )
    everything = b"".join(collector[0].bodies)
    for secret in (cookie, PASSWORD, query_marker, backend_cookie):
        assert secret.encode() not in everything, secret
    for span in collector[0].spans:
        for value in attributes(span).values():
            assert "?" not in str(value), (span.name, value)


async def test_the_collectors_headers_are_sent_and_never_logged(
    otel_env: None,
    make_gateway: MakeGateway,
    backend: TestServer,
    collector: tuple[Collector, TestServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    made = tracing.from_environment("http://127.0.0.1")
    assert made is not None
    gw = await make_gateway(routes_for(backend.port), tracing=made)
    assert (await gw.get("/open/x")).status == 200
    await collector[0].wait_for(lambda spans: len(spans) >= 3)
    assert collector[0].heads[0]["x-api-key"] == API_KEY
    assert collector[0].heads[0]["content-type"] == "application/x-protobuf"
    await gw.close()  # the app's cleanup: the last spans go out, the thread stops
    assert any("exporting spans" in record.getMessage() for record in caplog.records)
    for record in caplog.records:
        assert API_KEY not in record.getMessage()
        assert API_KEY not in repr(record.__dict__)


async def test_a_backend_that_is_down_marks_the_call_and_the_request_failed(
    make_gateway: MakeGateway, traced: tracing.Tracing, collector: tuple[Collector, TestServer]
) -> None:
    gw = await make_gateway(routes_for(free_port()), env=TRUSTED, tracing=traced)  # none listens
    resp = await gw.get("/open/x", headers={"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"})
    assert resp.status == 502
    spans = await collector[0].trace(CLIENT_TRACE, 3)
    [request] = [span for span in spans if span.kind == SERVER]
    [upstream] = [span for span in spans if span.kind == CLIENT]
    assert upstream.parent_span_id == request.span_id
    assert upstream.status.code == upstream.status.STATUS_CODE_ERROR
    assert attributes(upstream)["error.type"] == "UpstreamUnavailable"
    assert request.status.code == request.status.STATUS_CODE_ERROR
    assert attributes(request)["error.type"] == "502"
    assert attributes(request)["http.response.status_code"] == 502


async def test_the_spans_still_queued_go_out_when_the_app_stops(
    otel_env: None,
    monkeypatch: pytest.MonkeyPatch,
    make_gateway: MakeGateway,
    backend: TestServer,
    collector: tuple[Collector, TestServer],
) -> None:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")  # no batch leaves on its own
    made = tracing.from_environment("http://127.0.0.1")
    assert made is not None
    gw = await make_gateway(routes_for(backend.port), tracing=made)
    assert (await gw.get("/open/x")).status == 200
    assert collector[0].spans == []  # three spans queued, far from a full batch of 512
    await gw.close()  # the app's cleanup
    assert sorted(span.name for span in collector[0].spans) == ["GET", "GET open", "session check"]


@pytest.mark.parametrize(
    ("variable", "value", "named_in_message"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
        ("OTEL_EXPORTER_OTLP_HEADERS", f"authorization Bearer {API_KEY}", "entry 1"),
        ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", f"a=1,{API_KEY}", "entry 2"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:99999/", "a valid port"),
    ],
)
def test_what_the_exporter_cannot_use_is_refused_naming_the_variable(
    variable: str, value: str, named_in_message: str
) -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", variable: value}
    with pytest.raises(SettingsError) as refused:
        tracing.check(environ)
    message = str(refused.value)
    assert variable in message and named_in_message in message
    assert API_KEY not in message


def test_export_is_off_without_an_endpoint_or_with_the_sdk_disabled() -> None:
    assert not tracing.wanted({})
    assert not tracing.wanted({"OTEL_EXPORTER_OTLP_ENDPOINT": " "})
    assert not tracing.wanted(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"}
    )
    assert tracing.wanted({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/t"})
    tracing.check({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})  # off: nothing to refuse


def test_the_logged_endpoint_shows_no_credentials() -> None:
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://user:secret@collector:4318/"}
    assert tracing.endpoint(environ) == "https://collector:4318/v1/traces"
    traces = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://[::1]:4318/t?k=v"}
    assert tracing.endpoint(traces) == "http://[::1]:4318/t"


def test_run_refuses_grpc_at_startup(tmp_path: Path) -> None:
    done = cli(
        "run",
        "--routes",
        str(tmp_path / "routes.yaml"),
        "--data-dir",
        str(tmp_path / "var"),
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        },
    )
    assert done.returncode != 0
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=grpc" in done.stderr
    assert "Traceback" not in done.stderr


# Builds the app as `library-gateway run` does, serves a proxied request through it and
# prints which OpenTelemetry (and protobuf) modules the process holds.
WITHOUT_AN_ENDPOINT = textwrap.dedent(
    """
    import asyncio, sys

    from aiohttp import ClientSession, web
    from cryptography.fernet import Fernet, MultiFernet

    from gateway.server import processes  # the command's whole import graph
    from gateway.app import create_app
    from gateway.config.reload import RouteMap
    from gateway.config.routes_file import parse_routes
    from gateway.config.settings import Settings
    from gateway.ops import tracing
    from gateway.server.runner import GatewayRunner


    async def traceparent(request):
        return web.Response(text=request.headers.get("traceparent", ""))


    async def main(database_url):
        backend = web.Application()
        backend.router.add_get("/{tail:.*}", traceparent)
        backend_runner = web.AppRunner(backend)
        await backend_runner.setup()
        await web.TCPSite(backend_runner, "127.0.0.1", 0).start()
        backend_port = backend_runner.addresses[0][1]
        routes = (
            "routes:\\n  - name: open\\n    prefix: /open\\n"
            f"    backend: http://127.0.0.1:{backend_port}\\n    auth: public\\n"
        )
        settings = Settings.from_env({})
        made = tracing.from_environment(settings.public_url)
        assert made is None, made
        app = create_app(
            settings,
            RouteMap(parse_routes(routes, "routes.yaml")),
            database_url=database_url,
            cookie_keys=MultiFernet([Fernet(Fernet.generate_key())]),
            tracing=made,
        )
        runner = GatewayRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        async with ClientSession() as client:
            async with client.get(f"http://127.0.0.1:{port}/open/x") as answer:
                assert answer.status == 200, answer.status
                assert (await answer.text()).startswith("00-")
        await runner.cleanup()
        await backend_runner.cleanup()
        held = sorted(
            name for name in sys.modules
            if name.split(".")[0] == "opentelemetry" or name.startswith("google.protobuf")
        )
        print("held:", held)


    asyncio.run(main(sys.argv[1]))
    """
)


@pytest.mark.timeout(120)
def test_without_an_endpoint_nothing_of_opentelemetry_is_imported(
    database_url: str, tmp_path: Path
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    environ["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_AN_ENDPOINT, database_url],
        capture_output=True,
        text=True,
        timeout=100,
        env=environ,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip().splitlines()[-1] == "held: []"
