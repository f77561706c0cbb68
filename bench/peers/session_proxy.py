"""A first version of the gateway, as most people would write it: aiohttp + aiohttp-session,
one shared ClientSession, the body streamed through."""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web
from aiohttp_session import get_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet

HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "host",
    "content-length",
}
CLIENT = web.AppKey("client", aiohttp.ClientSession)


async def proxy(request: web.Request) -> web.StreamResponse:
    session = await get_session(request)
    if "uid" not in session:
        return web.json_response({"error": "authentication_required"}, status=401)
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
    headers["X-Library-User-Id"] = session["uid"]
    url = request.app["backend"] + request.raw_path
    async with request.app[CLIENT].request(
        request.method,
        url,
        headers=headers,
        data=request.content if request.can_read_body else None,
        allow_redirects=False,
        auto_decompress=False,
    ) as upstream:
        response = web.StreamResponse(
            status=upstream.status,
            headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP},
        )
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


async def client_ctx(app: web.Application):  # type: ignore[no-untyped-def]
    app[CLIENT] = aiohttp.ClientSession(auto_decompress=False)
    yield
    await app[CLIENT].close()


def main() -> None:
    port, key, backend = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    storage = EncryptedCookieStorage(Fernet(key.encode()), cookie_name="library_session")
    app = web.Application(middlewares=[session_middleware(storage)])
    app["backend"] = backend
    app.cleanup_ctx.append(client_ctx)
    app.router.add_route("*", "/{tail:.*}", proxy)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
