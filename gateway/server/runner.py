"""The HTTP server around the app: aiohttp's, with its own error answers tamed.

When aiohttp's parser refuses a request (smuggling shapes, oversized headers, garbage), the
answer is written by aiohttp before any of the gateway runs, and by default it names the
Python and aiohttp versions and echoes part of the offending bytes. `GatewayRunner` makes the
server use a request handler whose error answers carry the gateway's banner and no echo.
The same handler holds each connection's small writes to the end of the loop's pass (see
gateway.coalesce), so the answers of all the requests handled in a pass leave together, and
every request goes first to `gateway.front.Front`, which serves the proxied ones itself.
"""

from __future__ import annotations

import asyncio
from typing import cast

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from gateway.proxy.headers import BANNER
from gateway.server.coalesce import Coalescer
from gateway.server.front import Front


class _QuietRequestHandler(RequestHandler):
    def __init__(self, manager: _Server, **kwargs: object) -> None:
        super().__init__(manager, **kwargs)  # type: ignore[arg-type]
        self._coalescer = manager.coalescer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(self._coalescer.wrap(cast(asyncio.Transport, transport)))

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # The parser's message quotes the request; the status alone says what went wrong.
        response = super().handle_error(request, status, exc, None)
        response.headers["Server"] = BANNER
        return response


class _Server(web.Server):
    coalescer: Coalescer

    def __call__(self) -> RequestHandler:
        return _QuietRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # the application has started here
        server.__class__ = _Server  # same state, our handler factory
        cast(_Server, server).coalescer = Coalescer(asyncio.get_running_loop())
        server.request_handler = Front(self.app, server.request_handler)
        return server
