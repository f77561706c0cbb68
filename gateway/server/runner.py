"""The HTTP server around the app: aiohttp's, with its own error answers tamed.

When aiohttp's parser refuses a request (smuggling shapes, oversized headers, garbage), the
answer is written by aiohttp before any of the gateway runs, and by default it names the
Python and aiohttp versions and echoes part of the offending bytes. `GatewayRunner` serves
the application through a `GatewayServer`, whose request handler answers those errors with
the headers every answer of the gateway carries (its banner, nosniff, HSTS over https) and no
echo. The same handler holds each connection's small writes to the end of the loop's pass
(see gateway.proxy.coalesce), so the answers of all the requests handled in a pass leave
together, and every request goes first to `gateway.server.front.Front`, which serves the
proxied ones itself.

aiohttp offers no public way to choose the request handler's class or to see a connection's
transport first, so this module leans on a few of its private parts; the supported aiohttp
releases are pinned in pyproject.toml and tests/test_server_runner.py checks each part, so an
upgrade that changes one fails there, by name.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, cast

from aiohttp import web

from gateway import appkeys
from gateway.proxy.coalesce import Coalescer
from gateway.proxy.headers import stamp_response
from gateway.server.front import Front


class GatewayRequestHandler(web.RequestHandler):
    """aiohttp's per-connection protocol, writing through the coalescer and answering its
    own errors quietly."""

    __slots__ = ("_coalescer", "_https")

    def __init__(self, manager: GatewayServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._coalescer = manager.coalescer
        self._https = manager.https

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(self._coalescer.wrap(cast(asyncio.Transport, transport)))

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # The parser's message quotes the request; the status alone says what went wrong.
        response = super().handle_error(request, status, exc, None)
        stamp_response(response.headers, None, self._https)
        return response


class GatewayServer(web.Server):
    """aiohttp's low-level server with the gateway's request handler for each connection."""

    def __init__(
        self,
        handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
        *,
        coalescer: Coalescer,
        https: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self.coalescer = coalescer
        self.https = https

    def __call__(self) -> GatewayRequestHandler:
        # What web.Server.__call__ does, with our class.
        return GatewayRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An `AppRunner` whose server is a `GatewayServer` with `Front` as its handler."""

    async def _make_server(self) -> web.Server:
        # aiohttp's server for the application, which has started by now, made again as
        # ours with the same handler, request factory and arguments.
        server = await super()._make_server()
        return GatewayServer(
            Front(self.app, server.request_handler),
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            coalescer=Coalescer(asyncio.get_running_loop()),
            https=self.app[appkeys.SETTINGS].https,
            **server._kwargs,
        )


class _AdminRequestHandler(web.RequestHandler):
    """aiohttp's per-connection protocol for the admin listener, answering its parser's
    errors as `GatewayRequestHandler` does: the status alone, the gateway's banner."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        response = super().handle_error(request, status, exc, None)
        stamp_response(response.headers, None, False)
        return response


class _AdminServer(web.Server):
    def __call__(self) -> _AdminRequestHandler:
        return _AdminRequestHandler(self, loop=self._loop, **self._kwargs)


class AdminRunner(web.AppRunner):
    """The admin listener's runner (gateway.ops.admin): aiohttp's server, whose parser's
    refusals carry the gateway's versionless banner and nosniff and never echo the request,
    as the public port's do (the admin app stamps its own answers)."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        return _AdminServer(
            server.request_handler,
            request_factory=server.request_factory,
            handler_cancellation=server.handler_cancellation,
            **server._kwargs,
        )
