"""A connected library's back-channel logout receiver, for bench/logout.py.

    python bench/peers/backchannel_receiver.py PORT answer|hold

`answer` takes each logout token at once (200); `hold` never answers, and keeps each request
open until the gateway gives up waiting and closes it. `GET /stats` says how many tokens
arrived and how many requests are held open now.
"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

STATS = web.AppKey("stats", dict[str, int])
MODE = web.AppKey("mode", str)


async def receive(request: web.Request) -> web.Response:
    stats = request.app[STATS]
    form = await request.post()
    if "logout_token" not in form:
        return web.Response(status=400)
    stats["received"] += 1
    if request.app[MODE] == "hold":
        stats["held"] += 1
        try:
            await asyncio.Event().wait()  # until the gateway hangs up (handler cancellation)
        finally:
            stats["held"] -= 1
    return web.Response(status=200)


async def stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATS])


def main() -> None:
    port, mode = int(sys.argv[1]), sys.argv[2]
    if mode not in ("answer", "hold"):
        raise SystemExit("mode: answer or hold")
    app = web.Application()
    app[STATS] = {"received": 0, "held": 0}
    app[MODE] = mode
    app.router.add_post("/{tail:.*}", receive)
    app.router.add_get("/stats", stats)
    web.run_app(
        app,
        host="127.0.0.1",
        port=port,
        access_log=None,
        print=None,
        handler_cancellation=True,
    )


if __name__ == "__main__":
    main()
