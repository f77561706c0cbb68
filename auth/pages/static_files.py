"""The login pages' own files (today one stylesheet), served from memory.

They are read once, at start-up. A request names one of them or gets 404, so nothing a client
sends ever becomes a file-system path (the static-route traversals, aiohttp CVE-2024-23334
among them, have nothing to work on) and no request waits on a disk.
"""

from __future__ import annotations

import mimetypes
from importlib import resources

from aiohttp import web

from auth import urls


def add_routes(app: web.Application) -> None:
    files: dict[str, tuple[bytes, str]] = {}
    for entry in (resources.files("auth") / "static").iterdir():
        if entry.is_file():
            content_type = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
            files[entry.name] = (entry.read_bytes(), content_type)

    async def static_file(request: web.Request) -> web.Response:
        found = files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        charset = "utf-8" if content_type.startswith("text/") else None
        return web.Response(body=body, content_type=content_type, charset=charset)

    app.router.add_get(urls.STATIC + "/{name}", static_file)
