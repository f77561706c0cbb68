"""The pooled HTTP client that talks to the backends.

One aiohttp ClientSession for the process: its connector keeps idle keep-alive connections per
backend, so a patron's request normally reuses a warm connection. It never decompresses, never
follows redirects, keeps no cookies and adds no headers of its own: the backend sees what the
gateway decided to send and the client gets what the backend sent.

aiohttp's and asyncio's exceptions are converted here, once, into the gateway's own
(see gateway.errors).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.errors import PayloadTooLarge, UpstreamTimeout, UpstreamUnavailable
from gateway.routes import Route

_NO_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
CHUNK = 64 * 1024


class Upstream:
    def __init__(self, *, connections_per_backend: int = 512, keepalive: float = 30.0) -> None:
        connector = aiohttp.TCPConnector(
            limit=0,
            limit_per_host=connections_per_backend,
            keepalive_timeout=keepalive,
            ttl_dns_cache=300,
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_NO_AUTO_HEADERS,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
            read_bufsize=CHUNK,
        )

    async def close(self) -> None:
        await self.session.close()

    @contextlib.asynccontextmanager
    async def request(
        self,
        route: Route,
        method: str,
        url: str,
        headers: CIMultiDict[str],
        body: web.Request | None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """Send the request and yield the backend's response once its headers arrived.

        The route's timeout counts from the moment the request body has been sent, so a slow
        upload is not mistaken for a slow backend.
        """
        sent = asyncio.Event()
        data = None if body is None else _stream_body(body, route.max_body, sent)
        if data is None:
            sent.set()
        pending = asyncio.ensure_future(
            self.session.request(
                method, url, headers=headers, data=data, allow_redirects=False,
                compress=None, chunked=None,
            )
        )
        try:
            response = await _within(pending, sent, route.timeout)
        except TimeoutError as exc:
            raise UpstreamTimeout(route.name) from exc
        except PayloadTooLarge:
            raise
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamUnavailable(route.name) from exc
        except (aiohttp.ClientError, OSError) as exc:
            if isinstance(exc.__cause__, PayloadTooLarge):
                raise exc.__cause__ from None
            raise UpstreamUnavailable(route.name) from exc
        try:
            yield response
        finally:
            response.release()

    async def websocket(
        self, route: Route, url: str, headers: CIMultiDict[str], protocols: tuple[str, ...]
    ) -> aiohttp.ClientWebSocketResponse:
        try:
            async with asyncio.timeout(route.timeout):
                return await self.session.ws_connect(
                    url, headers=headers, protocols=protocols, autoclose=False,
                    autoping=True, max_msg_size=16 * 1024 * 1024,
                )
        except TimeoutError as exc:
            raise UpstreamTimeout(route.name) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnavailable(route.name) from exc


async def _within(
    pending: asyncio.Future[aiohttp.ClientResponse], sent: asyncio.Event, seconds: float
) -> aiohttp.ClientResponse:
    waiter: asyncio.Future[bool] = asyncio.ensure_future(sent.wait())
    try:
        await asyncio.wait((pending, waiter), return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    try:
        async with asyncio.timeout(seconds):
            return await pending
    except BaseException:
        pending.cancel()
        raise


async def _stream_body(
    request: web.Request, limit: int | None, sent: asyncio.Event
) -> AsyncIterator[bytes]:
    received = 0
    async for chunk in request.content.iter_any():
        received += len(chunk)
        if limit is not None and received > limit:
            raise PayloadTooLarge("The upload is larger than this service accepts.")
        yield chunk
    sent.set()
