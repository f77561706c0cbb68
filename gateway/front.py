"""The gateway's front door: the handler aiohttp's server calls for every request.

Nearly every request is for a backend, so the front door serves those itself: it opens the
request's `Exchange`, has the proxy answer, turns failures into small pages and counts the
result, the same steps the gateway middleware takes (`middleware.answer`). Only the gateway's
own paths (under `routes.RESERVED_PREFIXES`) and targets it refuses go on to the application,
whose router, middleware and response signal serve the pages and their errors.

Routing every proxied request through the application cost a router lookup, two middleware
layers and a response signal: about 15 µs of the ~100 µs a proxied request takes, measured in
turns under the benchmark.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import cast

from aiohttp import web

from gateway import headers, keys, middleware, proxy
from gateway.paths import BadPath, normalise
from gateway.routes import is_reserved


class Front:
    def __init__(self, app: web.Application,
                 application_handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]],
                 ) -> None:
        settings = app[keys.SETTINGS]
        self._proxy = app[proxy.PROXY]
        self._application = application_handler
        self._trusted = settings.trusted_proxies
        self._https = settings.https

    async def __call__(self, base_request: web.BaseRequest) -> web.StreamResponse:
        # The application runner's request factory makes every request a web.Request.
        request = cast(web.Request, base_request)
        try:
            path, query = normalise(request.raw_path)
        except BadPath:
            return await self._application(base_request)  # its middleware answers 400
        if is_reserved(path):
            return await self._application(base_request)
        exchange = middleware.open_exchange(request, self._trusted)
        exchange.target = keys.Target(path, query)
        try:
            response = await middleware.answer(
                request, exchange, self._proxy.handle(request, exchange), unrouted="_unmatched")
        except web.HTTPException as exc:  # aiohttp's own refusals (a broken WebSocket handshake)
            headers.stamp_response(exc.headers, exchange.request_id, self._https)
            raise
        if not response.prepared:
            headers.stamp_response(response.headers, exchange.request_id, self._https)
        return response
