"""WebSocket proxying: the upgrade is authorised like any request, then frames are relayed
both ways until either side closes, and the close code is passed on."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.config.routes import Route
from gateway.errors import BadRequest
from gateway.proxy.upstream import Upstream


def is_upgrade(request: web.Request) -> bool:
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


def _protocols(request: web.Request) -> tuple[str, ...]:
    offered = request.headers.get("Sec-WebSocket-Protocol", "")
    return tuple(item.strip() for item in offered.split(",") if item.strip())


async def bridge(
    request: web.Request,
    route: Route,
    url: str,
    headers: CIMultiDict[str],
    upstream: Upstream,
    sockets: weakref.WeakSet[web.WebSocketResponse],
    before_start: Callable[[web.StreamResponse], Awaitable[None]],
) -> web.StreamResponse:
    """Relay a WebSocket, kept in `sockets` while open (for a polite close at shutdown);
    `before_start` gets the client's response before it is sent (for its headers and the
    session cookie)."""
    if not web.WebSocketResponse().can_prepare(request).ok:
        raise BadRequest("This is not a valid WebSocket handshake.")
    # Connect to the backend first: if it is down the client gets a plain 502, not a socket
    # that opens and dies.
    ws_url = "ws" + url[len("http") :]
    backend = await upstream.websocket(route, ws_url, headers, _protocols(request))
    client = web.WebSocketResponse(
        protocols=(backend.protocol,) if backend.protocol else (),
        autoclose=False,
        max_msg_size=16 * 1024 * 1024,
    )
    await before_start(client)
    await client.prepare(request)
    sockets.add(client)
    try:
        to_backend = asyncio.ensure_future(_relay(client, backend))
        to_client = asyncio.ensure_future(_relay(backend, client))
        _, pending = await asyncio.wait(
            {to_backend, to_client}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    finally:
        sockets.discard(client)
        if not backend.closed:
            await backend.close(code=client.close_code or aiohttp.WSCloseCode.GOING_AWAY)
        if not client.closed:
            await client.close(code=backend.close_code or aiohttp.WSCloseCode.GOING_AWAY)
    return client


async def _relay(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    # Iteration ends at the peer's close frame (or an error); its code is then in close_code.
    async for message in source:
        if message.type == aiohttp.WSMsgType.TEXT:
            await sink.send_str(message.data)
        elif message.type == aiohttp.WSMsgType.BINARY:
            await sink.send_bytes(message.data)
        else:
            break
    if not sink.closed:
        await sink.close(code=source.close_code or aiohttp.WSCloseCode.OK)
