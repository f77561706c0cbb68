"""The application's middleware, which serves the gateway's own pages, and the headers every
application response carries.

The application only gets what `gateway.server.front` did not give to the proxy: the pages
under the reserved prefixes, and targets the front door refused. The front door has opened
the request's `Exchange` already; the middleware refuses a bad path with 400, tells the
pages' throttle the client's address, and guards the page like a proxied request
(`gateway.exchange.guarded`). aiohttp's bare plain-text 404 and 405 (no such page under a
reserved prefix, a method a page does not take) become the gateway's own error pages, as a
proxied request's are (`gateway.error_pages`). Headers every application response carries
(request id, Server, nosniff, HSTS, and the pages' security headers) are set in the response
signal made by `response_stamp`, so they also reach streamed responses.
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
from gateway.errors import BadRequest, MethodNotAllowed, NotFound
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
    try:
        return await handler(request)
    except web.HTTPNotFound as exc:
        if not _bare(exc):
            raise
        raise NotFound() from None
    except web.HTTPMethodNotAllowed as exc:
        if not _bare(exc):
            raise
        raise MethodNotAllowed(exc.allowed_methods) from None


def _bare(exc: web.HTTPException) -> bool:
    """Whether `exc` is aiohttp's own plain-text answer (the router's 404 and 405, or a
    handler's bare `raise web.HTTPNotFound()`), which becomes the gateway's page; a page that
    raised an answer with a body of its own keeps it."""
    return exc.text == f"{exc.status}: {exc.reason}"


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
