"""The HTTP server around the app: aiohttp's, with its own error answers tamed.

When aiohttp's parser refuses a request (smuggling shapes, oversized headers, garbage), the
answer is written by aiohttp before any of the gateway runs, and by default it names the
Python and aiohttp versions and echoes part of the offending bytes. `GatewayRunner` makes the
server use a request handler whose error answers carry the gateway's banner and no echo.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

BANNER = "library-gateway"


class _QuietRequestHandler(RequestHandler):
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
    def __call__(self) -> RequestHandler:
        return _QuietRequestHandler(self, loop=self._loop, **self._kwargs)


class GatewayRunner(web.AppRunner):
    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = _Server  # same state, our handler factory
        return server
