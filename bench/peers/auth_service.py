"""The usual deployment's decision service: nginx asks it (auth_request) for every request,
and it opens the aiohttp-session Fernet cookie to say 200 or 401."""

from __future__ import annotations

import sys

from aiohttp import web
from aiohttp_session import get_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet


async def check(request: web.Request) -> web.Response:
    session = await get_session(request)
    if "uid" not in session:
        return web.Response(status=401)
    return web.Response(status=200, headers={"X-Library-User-Id": session["uid"]})


def main() -> None:
    port, key = int(sys.argv[1]), sys.argv[2]
    storage = EncryptedCookieStorage(Fernet(key.encode()), cookie_name="library_session")
    app = web.Application(middlewares=[session_middleware(storage)])
    app.router.add_get("/auth", check)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


if __name__ == "__main__":
    main()
