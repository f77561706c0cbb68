"""The gateway's front door: the one way in, the handler aiohttp's server calls for every
request.

It opens the request's `Exchange` (id, client address) and normalises the path once. Nearly
every request is for a backend, so the front door hands those to the proxy itself, guarded by
`gateway.exchange.guarded` (failures made small pages, the result counted). Only the
gateway's own paths (`gateway.config.routes.is_reserved`) and targets it refuses go on to the
application, whose router, middleware and response signal serve the pages and their errors.

Routing proxied requests through the application would cost a router lookup, two middleware
layers and a response signal: about 15 µs of the ~100 µs a proxied request takes, measured in
turns under the benchmark.

Before any of that, one comparison refuses a request line in an HTTP version the gateway does
not speak: aiohttp's parser takes HTTP/0.9 and HTTP/2.0 request lines as if they were HTTP/1
and would have them forwarded as 1.1 and answered in their own version.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import HttpVersion10, HttpVersion11, web

from gateway import appkeys
from gateway.config.routes import is_reserved
from gateway.exchange import Target, guarded, open_exchange
from gateway.proxy import headers
from gateway.proxy.paths import BadPath, normalise

UNMATCHED = "_unmatched"
# The versions the gateway speaks, 1.1 first: the parser hands out these very objects, so a
# 1.1 request passes the check on its first identity test.
SPOKEN_VERSIONS = (HttpVersion11, HttpVersion10)


class Front:
    def __init__(
        self,
        app: web.Application,
        application_handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
    ) -> None:
        settings = app[appkeys.SETTINGS]
        self._proxy = app[appkeys.PROXY]
        self._application = application_handler
        self._trusted = settings.trusted_proxies
        self._https = settings.https
        self._tracing = app.get(appkeys.TRACING)

    async def __call__(self, base_request: web.BaseRequest) -> web.StreamResponse:
        # The application runner's request factory makes every request a web.Request.
        request = cast(web.Request, base_request)
        if request.version not in SPOKEN_VERSIONS:
            return self._version_not_supported(request)
        exchange = open_exchange(request, self._trusted, self._tracing)
        try:
            exchange.target = target = Target(*normalise(request.raw_path))
        except BadPath as exc:
            exchange.refusal = str(exc)  # the application's middleware answers 400
            return await self._application(base_request)
        if is_reserved(target.path):
            return await self._application(base_request)
        try:
            response = await guarded(
                request, exchange, self._proxy.handle(request, exchange), unrouted=UNMATCHED
            )
        except web.HTTPException as exc:  # aiohttp's own refusals (a broken WebSocket handshake)
            headers.stamp_response(exc.headers, exchange.request_id, self._https)
            raise
        if not response.prepared:
            headers.stamp_response(response.headers, exchange.request_id, self._https)
        return response

    def _version_not_supported(self, request: web.Request) -> web.StreamResponse:
        """505, before anything is forwarded, in a version the gateway speaks (RFC 9110 6.2:
        never one it does not conform to), and the connection closed."""
        # aiohttp writes the status line in the request's version, which `version` keeps in
        # the request's cache once read; aiohttp's own clone() sets cached values the same way.
        request._cache["version"] = HttpVersion11
        response = web.Response(
            status=505, text="505: HTTP Version Not Supported", content_type="text/plain"
        )
        response.force_close()
        headers.stamp_response(response.headers, None, self._https)
        return response
