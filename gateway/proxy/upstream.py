"""The pooled client that talks to the backends.

HTTP requests go over `BackendConnection`s kept alive per backend (LIFO, so the warmest
connection is reused and idle ones age out). A request that fails on a reused connection
before the backend sent a single byte is retried once on a fresh one when that is safe (no
body): the backend had simply closed an idle connection. WebSockets use aiohttp's client.

Foreign exceptions are converted here, once, into the gateway's own (see gateway.errors).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.config.routes import Backend, Route
from gateway.errors import PayloadTooLarge, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from gateway.proxy.coalesce import Coalescer
from gateway.proxy.connection import BackendConnection, ConnectionClosed, ResponseHead

CONNECT_TIMEOUT = 10.0
IDLE_LIMIT = 30.0
MAX_IDLE_PER_BACKEND = 256


class Upstream:
    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[BackendConnection]] = {}
        self._ws_session: aiohttp.ClientSession | None = None
        self._coalescer: Coalescer | None = None

    async def close(self) -> None:
        for connections in self._idle.values():
            for connection in connections:
                connection.close()
        self._idle.clear()
        if self._ws_session is not None:
            await self._ws_session.close()

    async def request(
        self,
        route: Route,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: web.Request | None,
    ) -> tuple[ResponseHead, BackendConnection]:
        """Send the request; return the answer's head and the connection to read its body
        from. The caller must hand the connection back with `release` when done.

        The route's timeout counts from the moment the request body has been sent, so a slow
        upload is not mistaken for a slow backend.
        """
        chunked = body is not None and not any(
            name.lower() == "content-length" for name, _ in headers
        )
        head = request_head(method, target, headers, chunked)
        attempts = 1 if body is not None else 2
        for attempt in range(attempts):
            connection = self._idle_connection(route.backend)
            reused = connection is not None
            if connection is None:
                connection = await self._connect(route)
            try:
                connection.start(head, method)
                if body is not None:
                    await connection.send_body(_limited(body, route.max_body), chunked)
                response_head = await connection.response_head(route.timeout)
            except BaseException as exc:
                connection.close()
                if not isinstance(exc, OSError):
                    raise  # not the connection failing: an upload over the limit, a cancellation
                if (
                    isinstance(exc, ConnectionClosed)
                    and exc.sent_nothing
                    and reused
                    and attempt + 1 < attempts
                ):
                    continue
                raise _upstream_error(route, exc) from exc
            return response_head, connection
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _idle_connection(self, backend: Backend) -> BackendConnection | None:
        """The most recently used live connection to the backend, if any."""
        idle = self._idle.get((backend.host, backend.port))
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_LIMIT:
                return connection
            connection.close()
        return None

    async def _connect(self, route: Route) -> BackendConnection:
        backend = route.backend
        loop = asyncio.get_running_loop()
        if self._coalescer is None:
            self._coalescer = Coalescer(loop)
        coalescer = self._coalescer
        try:
            async with asyncio.timeout(min(CONNECT_TIMEOUT, route.timeout)):
                _, protocol = await loop.create_connection(
                    lambda: BackendConnection(loop, coalescer),
                    backend.host,
                    backend.port,
                    ssl=backend.scheme == "https" or None,
                    server_hostname=backend.host if backend.scheme == "https" else None,
                )
        except OSError as exc:
            raise _upstream_error(route, exc) from exc
        return protocol

    def release(self, route: Route, connection: BackendConnection) -> None:
        """Take the connection back: kept for the next request if its answer was read to the
        end and the backend allows keep-alive, closed otherwise."""
        backend = route.backend
        if not (connection.reusable and connection.complete) or connection.closed:
            connection.close()
            return
        idle = self._idle.setdefault((backend.host, backend.port), [])
        if len(idle) >= MAX_IDLE_PER_BACKEND:
            connection.close()
            return
        connection.idle_since = time.monotonic()
        idle.append(connection)

    async def websocket(
        self, route: Route, url: str, headers: CIMultiDict[str], protocols: tuple[str, ...]
    ) -> aiohttp.ClientWebSocketResponse:
        if self._ws_session is None:
            self._ws_session = aiohttp.ClientSession(
                cookie_jar=aiohttp.DummyCookieJar(),
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        try:
            async with asyncio.timeout(route.timeout):
                return await self._ws_session.ws_connect(
                    url,
                    headers=headers,
                    protocols=protocols,
                    autoclose=False,
                    autoping=True,
                    max_msg_size=16 * 1024 * 1024,
                )
        except (aiohttp.ClientError, OSError) as exc:
            raise _upstream_error(route, exc) from exc


def _upstream_error(route: Route, exc: Exception) -> UpstreamError:
    """What a failed exchange with the route's backend is for the client: a timeout (504),
    or else a backend refused, reset or unreachable (502)."""
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout(route.name)
    return UpstreamUnavailable(route.name)


def request_head(method: str, target: str, headers: list[tuple[str, str]], chunked: bool) -> bytes:
    """The request line and headers as they go on the wire."""
    head = _joined(method, target, headers, chunked)
    if head is None:
        # aiohttp's parser refuses CR and LF in what clients send; this keeps anything the
        # gateway adds from ever splitting a header either.
        head = _joined(
            method,
            target,
            [
                (name, value)
                for name, value in headers
                if not any(c in name or c in value for c in "\r\n")
            ],
            chunked,
        )
    assert head is not None, "the request line itself holds a line break"
    return head


def _joined(
    method: str, target: str, headers: list[tuple[str, str]], chunked: bool
) -> bytes | None:
    lines = [f"{method} {target} HTTP/1.1", *[f"{name}: {value}" for name, value in headers]]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    text = "\r\n".join(lines)
    # Each line break must be one of the separators: one count per character, both in C.
    separators = len(lines) - 1
    if text.count("\n") != separators or text.count("\r") != separators:
        return None
    return (text + "\r\n\r\n").encode("utf-8", "surrogateescape")


async def _limited(request: web.Request, limit: int | None) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in request.content.iter_any():
        received += len(chunk)
        if limit is not None and received > limit:
            raise PayloadTooLarge("The upload is larger than this service accepts.")
        yield chunk
