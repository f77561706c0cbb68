"""The login pages' own files (today one stylesheet), and the staff console's, served from
memory.

They are read once, at start-up. A request names one of them or gets 404, so nothing a client
sends ever becomes a file-system path (the static-route traversals, aiohttp CVE-2024-23334
among them, have nothing to work on) and no request waits on a disk.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Awaitable, Callable
from importlib import resources

from aiohttp import web

from auth import urls


def from_memory(package: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The handler of `package`'s static/ folder, read now: it answers `{name}` with the file
    of that name, or 404."""
    files: dict[str, tuple[bytes, str]] = {}
    for entry in (resources.files(package) / "static").iterdir():
        if entry.is_file():
            content_type = mimetypes.guess_type(entry.name)[0] or "application/octet-stream"
            files[entry.name] = (entry.read_bytes(), content_type)

    async def static_file(request: web.Request) -> web.Response:
        found = files.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        text = content_type.startswith(("text/", "application/javascript"))
        return web.Response(body=body, content_type=content_type, charset="utf-8" if text else None)

    return static_file


def add_routes(app: web.Application) -> None:
    app.router.add_get(urls.STATIC + "/{name}", from_memory("auth"))
