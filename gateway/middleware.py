"""The application's middleware, which serves the gateway's own pages, and the headers every
application response carries.

The application only gets what `gateway.server.front` did not give to the proxy: the pages
under the reserved prefixes, and targets the front door refused. The front door has opened
the request's `Exchange` already; the middleware refuses a bad path with 400, tells the
pages' throttle the client's address, and guards the page like a proxied request
(`gateway.exchange.guarded`). Headers every application response carries (request id, Server,
nosniff, HSTS, and the pages' security headers) are set in the response signal made by
`response_stamp`, so they also reach streamed responses.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Handler

from auth import urls
from auth.audit import REQUEST_ID
from auth.credentials.throttle import CLIENT_ADDRESS
from auth.pages.render import page_headers
from gateway.config.settings import Settings
from gateway.errors import BadRequest
from gateway.exchange import EXCHANGE, guarded
from gateway.proxy import headers

UNROUTED = "_gateway"


@web.middleware
async def pages(request: web.Request, handler: Handler) -> web.StreamResponse:
    exchange = request[EXCHANGE]
    request[CLIENT_ADDRESS] = exchange.client_address
    request[REQUEST_ID] = exchange.request_id
    return await guarded(
        request, exchange, _page(request, handler, exchange.refusal), unrouted=UNROUTED
    )


async def _page(request: web.Request, handler: Handler, refusal: str | None) -> web.StreamResponse:
    if refusal is not None:
        raise BadRequest(refusal)
    return await handler(request)


def response_stamp(
    settings: Settings,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """The on_response_prepare handler: what every response of the application carries."""
    https = settings.https

    async def stamp(request: web.Request, response: web.StreamResponse) -> None:
        exchange = request.get(EXCHANGE)
        headers.stamp_response(
            response.headers, exchange.request_id if exchange is not None else None, https
        )
        if urls.is_page(request.path):
            page_headers(request, response)

    return stamp
