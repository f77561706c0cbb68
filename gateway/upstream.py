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

from gateway.connection import Answer, BackendConnection, ConnectionClosed
from gateway.errors import PayloadTooLarge, UpstreamTimeout, UpstreamUnavailable
from gateway.routes import Route

CONNECT_TIMEOUT = 10.0
IDLE_LIMIT = 30.0
MAX_IDLE_PER_BACKEND = 256


class Upstream:
    def __init__(self) -> None:
        self._idle: dict[tuple[str, int], list[BackendConnection]] = {}
        self._ws_session: aiohttp.ClientSession | None = None

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
        headers: CIMultiDict[str],
        body: web.Request | None,
    ) -> tuple[Answer, BackendConnection]:
        """Send the request; return the answer's head and the connection to read its body
        from. The caller must hand the connection back with `release` when done.

        The route's timeout counts from the moment the request body has been sent, so a slow
        upload is not mistaken for a slow backend.
        """
        chunked = body is not None and "Content-Length" not in headers
        head = _request_head(method, target, headers, chunked)
        attempts = 1 if body is not None else 2
        for attempt in range(attempts):
            connection, reused = await self._checkout(route)
            try:
                data = None if body is None else _limited(body, route.max_body)
                pending = await connection.send(head, data, chunked, method)
                async with asyncio.timeout(route.timeout):
                    answer = await pending
            except ConnectionClosed as exc:
                connection.close()
                if reused and exc.sent_nothing and attempt + 1 < attempts:
                    continue
                raise UpstreamUnavailable(route.name) from exc
            except TimeoutError as exc:
                connection.close()
                raise UpstreamTimeout(route.name) from exc
            except PayloadTooLarge:
                connection.close()
                raise
            except OSError as exc:
                connection.close()
                raise UpstreamUnavailable(route.name) from exc
            except BaseException:
                connection.close()
                raise
            return answer, connection
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _checkout(self, route: Route) -> tuple[BackendConnection, bool]:
        backend = route.backend
        idle = self._idle.get((backend.host, backend.port))
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < IDLE_LIMIT:
                return connection, True
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(min(CONNECT_TIMEOUT, route.timeout)):
                _, protocol = await loop.create_connection(
                    lambda: BackendConnection(loop), backend.host, backend.port,
                    ssl=backend.scheme == "https" or None,
                    server_hostname=backend.host if backend.scheme == "https" else None,
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(route.name) from exc
        except OSError as exc:
            raise UpstreamUnavailable(route.name) from exc
        return protocol, False

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
                    url, headers=headers, protocols=protocols, autoclose=False,
                    autoping=True, max_msg_size=16 * 1024 * 1024,
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(route.name) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(route.name) from exc


def _request_head(method: str, target: str, headers: CIMultiDict[str], chunked: bool) -> bytes:
    lines = [f"{method} {target} HTTP/1.1"]
    for name, value in headers.items():
        # aiohttp's parser already refused CR/LF in what clients sent; this keeps anything
        # the gateway adds from ever splitting a header either.
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            continue
        lines.append(f"{name}: {value}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")


async def _limited(request: web.Request, limit: int | None) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in request.content.iter_any():
        received += len(chunk)
        if limit is not None and received > limit:
            raise PayloadTooLarge("The upload is larger than this service accepts.")
        yield chunk
