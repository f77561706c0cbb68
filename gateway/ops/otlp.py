"""The spans themselves, made with the OpenTelemetry SDK and sent over OTLP/HTTP.

Imported only when an OTLP endpoint is set (`gateway.ops.tracing.from_environment`). The
SDK reads the standard variables itself: the endpoint, `OTEL_EXPORTER_OTLP_HEADERS`,
`OTEL_EXPORTER_OTLP_TIMEOUT`, `OTEL_BSP_*` (the batches and the queue), `OTEL_TRACES_SAMPLER`,
`OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`. Spans are queued as they end and sent
by the SDK's own thread; the event loop never waits for the collector.

The span ids are the W3C ones: the request's span is a child of the trusted proxy's span
(`TraceContext.parent_id`) or the root of a new trace, and `exchange.trace` is rewritten to
name it, so the access log's trace id is the exported one. The backend's `traceparent` names
the upstream span. Attributes follow OpenTelemetry's HTTP conventions and carry no query
string, no header value, no cookie and nothing of a password: the path the gateway matched
(normalised), the method, the route's name, the status.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from collections.abc import Awaitable
from types import TracebackType
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from auth.credentials.passwords import Hashing, Verification
from gateway.config.routes import Route, is_reserved
from gateway.ops.tracing import SERVICE_NAME, endpoint
from gateway.proxy.headers import TraceContext

if TYPE_CHECKING:
    from aiohttp import web

    from gateway.exchange import Exchange
    from gateway.proxy.connection import BackendConnection, ResponseHead

log = logging.getLogger("gateway.tracing")

# RFC 9110's methods; anything else is `_OTHER` (HTTP semantic conventions).
_METHODS = frozenset(
    {"CONNECT", "DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT", "TRACE"}
)
_NO_PARENT = otel_context.Context()


def _method(method: str) -> str:
    return method if method in _METHODS else "_OTHER"


def _span_name(method: str, route: str | None) -> str:
    name = method if method in _METHODS else "HTTP"
    return name if route is None else f"{name} {route}"


def _version() -> str | None:
    try:
        return importlib.metadata.version("library-gateway")
    except importlib.metadata.PackageNotFoundError:
        return None


def exporting(public_url: str) -> OtlpTracing:
    """Tracing that sends its spans to the OTLP endpoint the environment names."""
    version = _version()
    resource = Resource.create({"service.version": version} if version else {})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    exporter = OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    # Where to, without any user part or query; never the headers, which carry keys.
    log.info(
        "exporting spans over OTLP/HTTP",
        extra={"endpoint": endpoint(), "service": resource.attributes.get("service.name")},
    )
    return OtlpTracing(provider, public_url)


def _failed(span: trace.Span, exc: BaseException) -> None:
    """Mark a span failed by the exception's class alone: its message may hold data."""
    kind = type(exc).__qualname__
    span.set_attribute("error.type", kind)
    span.set_status(trace.Status(trace.StatusCode.ERROR, kind))


class OtlpTracing:
    """The `gateway.ops.tracing.Tracing` that exports: one tracer provider per process."""

    def __init__(self, provider: TracerProvider, public_url: str) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("library-gateway", _version())
        self._scheme = public_url.partition("://")[0]

    def request(self, request: web.Request, exchange: Exchange) -> OtlpRequestSpans:
        trace_context = exchange.trace
        assert trace_context is not None, "the exchange's trace is made before its span"
        parent = _NO_PARENT
        if trace_context.parent_id is not None:
            parent = trace.set_span_in_context(
                trace.NonRecordingSpan(
                    trace.SpanContext(
                        int(trace_context.trace_id, 16),
                        int(trace_context.parent_id, 16),
                        is_remote=True,
                        trace_flags=trace.TraceFlags(int(trace_context.flags, 16)),
                    )
                )
            )
        method = _method(request.method)
        span = self._tracer.start_span(
            _span_name(request.method, None),
            context=parent,
            kind=trace.SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.scheme": self._scheme,
                "client.address": exchange.client_address,
                "library_gateway.request_id": exchange.request_id,
            },
            record_exception=False,
        )
        exchange.trace = _named(span, trace_context)
        return OtlpRequestSpans(self._tracer, span, exchange)

    def hasher(self, hasher: Hashing) -> Hashing:
        return _TracedHasher(self._tracer, hasher)

    async def close(self) -> None:
        # Joins the exporting thread after its last batch: not on the event loop.
        await asyncio.to_thread(self._provider.shutdown)


def _named(span: trace.Span, was: TraceContext) -> TraceContext:
    """The request's trace context with `span` as the gateway's span."""
    ids = span.get_span_context()
    return TraceContext(
        f"{ids.trace_id:032x}",
        f"{ids.span_id:016x}",
        f"{int(ids.trace_flags):02x}",
        was.state,
        was.parent_id,
    )


class OtlpRequestSpans:
    """One request's spans (`gateway.ops.tracing.RequestSpans`)."""

    __slots__ = ("_context", "_exchange", "_recording", "_span", "_token", "_tracer", "_upstream")

    def __init__(self, tracer: trace.Tracer, span: trace.Span, exchange: Exchange) -> None:
        self._tracer = tracer
        self._span = span
        self._exchange = exchange
        self._context = trace.set_span_in_context(span)
        # Current for the request's task, so that spans started deeper (a password checked
        # by the pages) are its children.
        self._token = otel_context.attach(self._context)
        self._upstream: trace.Span | None = None
        # A request the sampler left out makes no other span: none would be exported, and
        # making them costs about as much as the request's own work (measured).
        self._recording = span.is_recording()

    def session_check(self) -> _SessionCheck | _Unrecorded:
        if not self._recording:
            return _UNRECORDED
        return _SessionCheck(
            self._tracer.start_span("session check", context=self._context, record_exception=False)
        )

    def start_upstream(self, method: str, route: Route, path: str) -> TraceContext:
        trace_context = self._exchange.trace
        assert trace_context is not None
        if not self._recording:
            return trace_context  # the backend's parent: the request's span, not exported either
        backend = route.backend
        span = self._upstream = self._tracer.start_span(
            _span_name(method, None),
            context=self._context,
            kind=trace.SpanKind.CLIENT,
            attributes={
                "http.request.method": _method(method),
                "server.address": backend.host,
                "server.port": backend.port,
                "url.full": backend.origin + path,  # never the query
            },
            record_exception=False,
        )
        return _named(span, trace_context)

    def upstream_call(
        self, call: Awaitable[tuple[ResponseHead, BackendConnection]]
    ) -> Awaitable[tuple[ResponseHead, BackendConnection]]:
        span = self._upstream
        return call if span is None else self._timed(span, call)

    async def _timed(
        self, span: trace.Span, call: Awaitable[tuple[ResponseHead, BackendConnection]]
    ) -> tuple[ResponseHead, BackendConnection]:
        try:
            answer = await call
        except BaseException as exc:
            _failed(span, exc)
            span.end()
            raise
        status = answer[0].status
        if status < 400:
            span.set_attribute("http.response.status_code", status)
        else:
            span.set_attributes({"http.response.status_code": status, "error.type": str(status)})
            span.set_status(trace.Status(trace.StatusCode.ERROR))
        span.end()
        return answer

    def finish(self, request: web.Request, status: int) -> None:
        span, exchange = self._span, self._exchange
        upstream = self._upstream
        if upstream is not None and upstream.is_recording():
            upstream.end()  # a WebSocket's: open for as long as the relay was
        if span.is_recording():
            # Gathered and set at once: each call to the span takes its lock.
            found: dict[str, str | int] = {"http.response.status_code": status}
            route = exchange.route
            target = exchange.target
            if route is None and target is not None and is_reserved(target.path):
                resource = request.match_info.route.resource
                route = resource.canonical if resource is not None else None
            if route is not None:
                span.update_name(_span_name(request.method, route))
                found["http.route"] = route
            if target is not None:
                found["url.path"] = target.path
            if status >= 500:
                found["error.type"] = str(status)
                span.set_status(trace.Status(trace.StatusCode.ERROR))
            span.set_attributes(found)
        span.end()
        otel_context.detach(self._token)


class _SessionCheck:
    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def __enter__(self) -> _SessionCheck:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None:
            _failed(self._span, exc)
        self._span.end()

    def outcome(self, *, logged_in: bool, asked_database: bool) -> None:
        self._span.set_attributes(
            {
                "library_gateway.session.logged_in": logged_in,
                "library_gateway.session.asked_database": asked_database,
            }
        )


class _Unrecorded:
    """The session check of a request that is not sampled: nothing to record."""

    __slots__ = ()

    def __enter__(self) -> _Unrecorded:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        return None

    def outcome(self, *, logged_in: bool, asked_database: bool) -> None:
        return None


_UNRECORDED = _Unrecorded()


class _TracedHasher:
    """A hasher whose every hash and check is a span under the current one (the login's
    request). The span is made here, on the event loop, around the wait for the hasher's
    thread pool: that wait is part of what the patron waits for."""

    def __init__(self, tracer: trace.Tracer, hasher: Hashing) -> None:
        self._tracer = tracer
        self._hasher = hasher

    async def hash(self, password: str) -> str:
        span = self._tracer.start_span("password hashing", record_exception=False)
        try:
            return await self._hasher.hash(password)
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            span.end()

    async def verify(self, stored: str | None, password: str) -> Verification:
        span = self._tracer.start_span("password verification", record_exception=False)
        try:
            return await self._hasher.verify(stored, password)
        except BaseException as exc:
            _failed(span, exc)
            raise
        finally:
            span.end()
