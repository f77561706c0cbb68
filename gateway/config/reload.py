"""The route map in force, and how it changes while the gateway runs.

`RouteMap.table` is swapped as a whole: a request reads it once and keeps its table, so a
reload never disturbs a request in flight. The watcher checks the file's contents (not just its
modification time, which a Kubernetes ConfigMap's symlink swap does not always change) once a
second, and SIGHUP reloads at once. A broken file is logged with its reasons and ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from aiohttp import web

from gateway.config.routes import RouteTable
from gateway.config.routes_file import RoutesInvalid, load_routes

log = logging.getLogger("gateway.routes")


class RouteMap:
    def __init__(self, table: RouteTable, path: Path | None = None) -> None:
        self.table = table
        self.path = path
        self.reloads_ok = 0
        self.reloads_failed = 0
        # Called after the new map is in force, or after a file was refused; they let a
        # caller (the tests, a metrics hook) follow reloads without polling.
        self.on_change: list[Callable[[RouteTable], None]] = []
        self.on_failure: list[Callable[[RoutesInvalid], None]] = []

    def reload(self) -> bool:
        """Load the file again; True when a new map is now in force."""
        if self.path is None:
            return False
        try:
            table = load_routes(self.path)
        except RoutesInvalid as exc:
            self.reloads_failed += 1
            log.error(
                "route map not reloaded, the last good one stays in force",
                extra={"problems": [str(problem) for problem in exc.problems]},
            )
            for failed in self.on_failure:
                failed(exc)
            return False
        if table.digest == self.table.digest:
            return False
        self.table = table
        self.reloads_ok += 1
        log.info("route map reloaded", extra={"routes": [route.name for route in table.routes]})
        for callback in self.on_change:
            callback(table)
        return True


def _fingerprint(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


async def watch(route_map: RouteMap, interval: float = 1.0) -> None:
    assert route_map.path is not None
    seen = _fingerprint(route_map.path)
    while True:
        await asyncio.sleep(interval)
        current = await asyncio.to_thread(_fingerprint, route_map.path)
        if current is not None and current != seen:
            seen = current
            route_map.reload()


def route_watcher(
    route_map: RouteMap,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx that watches the routes file and listens for SIGHUP while the app runs."""

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        if route_map.path is None:
            yield
            return
        async with _watching(route_map):
            yield

    return ctx


@contextlib.asynccontextmanager
async def _watching(route_map: RouteMap) -> AsyncIterator[None]:
    task = asyncio.create_task(watch(route_map))
    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, route_map.reload)
        hup = True
    except (NotImplementedError, RuntimeError, ValueError):
        hup = False  # not the main thread (tests) or no signals on this platform
    try:
        yield
    finally:
        if hup:
            loop.remove_signal_handler(signal.SIGHUP)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
