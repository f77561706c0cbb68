"""Tracing's seam: whether the gateway exports spans, and what a request asks of them.

Spans go out over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is set; the OpenTelemetry SDK reads the rest of the
standard `OTEL_*` variables itself. Unset, OpenTelemetry is never imported: `from_environment`
gives None, the request's `Exchange.spans` stays None, and the proxy path pays a None check
where a span would start. The W3C trace context (`gateway.proxy.headers.trace_context`) is
kept either way: the backend gets a `traceparent`, the access log the trace id.

On, `gateway.ops.otlp` makes four kinds of span: the request (SERVER), its session check, a
password hashed or checked, and the call to the backend (CLIENT), whose id is the parent the
backend's `traceparent` names. A background thread of the SDK sends them in batches.
"""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Mapping
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit

from gateway.config.settings import SettingsError

if TYPE_CHECKING:
    from aiohttp import web

    from auth.credentials.passwords import Hashing
    from gateway.config.routes import Route
    from gateway.exchange import Exchange
    from gateway.proxy.connection import BackendConnection, ResponseHead
    from gateway.proxy.headers import TraceContext

# The traces-only variable first: the SDK prefers it too.
ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
PROTOCOLS = ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
HEADERS = ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS")
PROTOCOL = "http/protobuf"
SERVICE_NAME = "library-gateway"

# One `name=value` of an OTLP headers variable as the SDK reads it (its liberal form: the
# value may hold spaces). An entry the SDK cannot read it logs whole, key and all, so the
# gateway refuses such a value at start instead.
_HEADER = re.compile(
    r"[ \t]*[\x21\x23-\x27\x2a\x2b\x2d\x2e\x30-\x39\x41-\x5a\x5e-\x7a\x7c\x7e]+[ \t]*="
    r"[ \t]*[\x20\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*[ \t]*"
)


class SessionCheck(Protocol):
    def outcome(self, *, logged_in: bool, asked_database: bool) -> None: ...


class RequestSpans(Protocol):
    """One request's spans, kept on its `Exchange` while export is on."""

    def session_check(self) -> AbstractContextManager[SessionCheck]:
        """The span of the patron's session check, ended when the block ends."""
        ...

    def start_upstream(self, method: str, route: Route, path: str) -> TraceContext:
        """Start the span of the call to `route`'s backend; the trace context to send it."""
        ...

    def upstream_call(
        self, call: Awaitable[tuple[ResponseHead, BackendConnection]]
    ) -> Awaitable[tuple[ResponseHead, BackendConnection]]:
        """`call` (the backend's answer), ending the upstream span when the head is in."""
        ...

    def finish(self, request: web.Request, status: int) -> None:
        """End the request's span (and the upstream one, if still open) with `status`."""
        ...


class Tracing(Protocol):
    """Export on: what the app, the front door and the pages use."""

    def request(self, request: web.Request, exchange: Exchange) -> RequestSpans:
        """Start the request's span (a child of a trusted proxy's, else a new trace) and
        make `exchange.trace` name it."""
        ...

    def hasher(self, hasher: Hashing) -> Hashing:
        """`hasher`, with a span for every password it hashes or checks."""
        ...

    async def close(self) -> None:
        """Send what is still queued and stop the exporting thread."""
        ...


def wanted(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether spans are to be exported: an OTLP endpoint is set (and the SDK not disabled)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name, "").strip() for name in ENDPOINTS)


def check(environ: Mapping[str, str] = os.environ) -> None:
    """Refuse, naming the variable, what the exporter could not use; never quotes a value
    that may hold a key (the endpoint's user part, the headers)."""
    if not wanted(environ):
        return
    for name in ENDPOINTS:
        value = environ.get(name, "").strip()
        if value:
            parts = urlsplit(value)
            try:
                usable = parts.scheme in ("http", "https") and bool(parts.hostname)
                parts.port  # noqa: B018 (parsing it is the check)
            except ValueError:
                usable = False
            if not usable:
                raise SettingsError(
                    f"{name} must be an http:// or https:// URL with a host (and a valid port)"
                )
            break
    for name in PROTOCOLS:
        value = environ.get(name, "").strip()
        if value:
            if value != PROTOCOL:
                raise SettingsError(
                    f"{name}={value}: the gateway exports spans over OTLP/HTTP only; set it to "
                    f"{PROTOCOL} (or unset it) and point the endpoint at the collector's HTTP "
                    "port (4318 by default)"
                )
            break
    for name in HEADERS:
        value = environ.get(name, "")
        if value.strip():
            for number, entry in enumerate(re.split(r"[ \t]*,[ \t]*", value), start=1):
                if entry and not _HEADER.fullmatch(entry.strip()):
                    raise SettingsError(
                        f"{name}: entry {number} is not name=value (value not shown: it may "
                        "hold a key)"
                    )
            break


def endpoint(environ: Mapping[str, str] = os.environ) -> str | None:
    """Where spans go, as the exporter works it out (the traces variable whole, else the
    general one with `/v1/traces`), shown without any user part or query."""
    url = environ.get(ENDPOINTS[0], "").strip()
    if not url:
        base = environ.get(ENDPOINTS[1], "").strip()
        if not base:
            return None
        url = base.removesuffix("/") + "/v1/traces"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port is not None else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def from_environment(public_url: str) -> Tracing | None:
    """Tracing as the `OTEL_*` variables ask for it (`SettingsError` if they ask for what
    cannot be done); None when no endpoint is set, and then nothing is imported."""
    if not wanted():
        return None
    check()
    from gateway.ops import otlp

    return otlp.exporting(public_url)
