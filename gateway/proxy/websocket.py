"""WebSocket proxying: the upgrade is authorised like any request, then frames are relayed
both ways until either side closes, and the close code is passed on.

A socket opened with a session is held under it (`SessionRegistry.hold`): when the session
ends (a logout, a password change or reset, a disabled account, the helpdesk; heard on any
instance) both sides are closed with `SESSION_ENDED`, so the backend never goes on taking
the socket for the patron's."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from gateway.config.routes import Route
from gateway.errors import BadRequest
from gateway.proxy.upstream import Upstream

SESSION_ENDED = 4401
"""The close code of a socket whose session ended (private range, after HTTP's 401: log in
again), sent to the browser and to the backend, with the reason `SESSION_ENDED_REASON`."""
SESSION_ENDED_REASON = b"session ended"

Hold = Callable[[Callable[[], None]], Callable[[], None]]
"""Calls its argument once the socket's session is over; returns what forgets it."""


def is_upgrade(request: web.Request) -> bool:
    return (
        request.method == "GET"
        and request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


def origin_of(url: str) -> str:
    """The origin of `url` as a browser serialises it in an `Origin` header: lower-case
    scheme and host, the port only when it is not the scheme's default."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return f"{parts.scheme.lower()}://{host}" + ("" if port in (None, default) else f":{port}")


def cross_site(request: web.Request, origin: str) -> bool:
    """Whether a browser opened this handshake from a page of another origin than `origin`
    (the gateway's own). Browsers always send Origin with a WebSocket handshake, and a page
    cannot forge it; a client that sends none is no browser another site could drive."""
    sent = request.headers.get("Origin")
    return sent is not None and sent.strip().lower() != origin


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
    hold: Hold | None = None,
) -> web.StreamResponse:
    """Relay a WebSocket, kept in `sockets` while open (for a polite close at shutdown);
    `before_start` gets the client's response before it is sent (for its headers and the
    session cookie); `hold`, when the backend is told who the patron is, holds the socket
    under the patron's session until it closes."""
    if not web.WebSocketResponse().can_prepare(request).ok:
        raise BadRequest("This is not a valid WebSocket handshake.")
    # Held from before the first wait: a revocation heard while the backend answers the
    # handshake ends the socket as soon as it is open.
    session_over = asyncio.Event()
    release = hold(session_over.set) if hold is not None else None
    try:
        # Connect to the backend first: if it is down the client gets a plain 502, not a
        # socket that opens and dies.
        ws_url = "ws" + url[len("http") :]
        backend = await upstream.websocket(route, ws_url, headers, _protocols(request))
        client = web.WebSocketResponse(
            protocols=(backend.protocol,) if backend.protocol else (),
            autoclose=False,
            max_msg_size=16 * 1024 * 1024,
        )
        try:
            await before_start(client)
            await client.prepare(request)
            sockets.add(client)
            await _relay_both(client, backend, session_over)
        finally:
            sockets.discard(client)
            await _close(client, backend, session_over.is_set())
    finally:
        if release is not None:
            release()
    return client


async def _relay_both(
    client: web.WebSocketResponse,
    backend: aiohttp.ClientWebSocketResponse,
    session_over: asyncio.Event,
) -> None:
    """Relay until either side closes, or the session is over."""
    to_backend = asyncio.ensure_future(_relay(client, backend))
    to_client = asyncio.ensure_future(_relay(backend, client))
    over = asyncio.ensure_future(session_over.wait())
    _, pending = await asyncio.wait(
        {to_backend, to_client, over}, return_when=asyncio.FIRST_COMPLETED
    )
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def _close(
    client: web.WebSocketResponse, backend: aiohttp.ClientWebSocketResponse, session_over: bool
) -> None:
    """Close what is still open: with the other side's code, or both at once with
    `SESSION_ENDED` when the session is over."""
    if session_over:
        closing = []
        if not backend.closed:
            closing.append(backend.close(code=SESSION_ENDED, message=SESSION_ENDED_REASON))
        if client.prepared and not client.closed:
            closing.append(client.close(code=SESSION_ENDED, message=SESSION_ENDED_REASON))
        await asyncio.gather(*closing)
        return
    if not backend.closed:
        await backend.close(code=client.close_code or aiohttp.WSCloseCode.GOING_AWAY)
    if client.prepared and not client.closed:
        await client.close(code=backend.close_code or aiohttp.WSCloseCode.GOING_AWAY)


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
