"""A backend that swallows uploads and says how much it got (for the upload throughput)."""

from __future__ import annotations

import sys

from aiohttp import web


async def sink(request: web.Request) -> web.Response:
    total = 0
    async for chunk in request.content.iter_any():
        total += len(chunk)
    return web.json_response({"bytes": total})


def main() -> None:
    app = web.Application(client_max_size=0)
    app.router.add_route("*", "/{tail:.*}", sink)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)


if __name__ == "__main__":
    main()
