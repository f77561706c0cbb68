"""The configuration files in force, and how they change while the gateway runs.

routes.yaml (`RouteMap`) and clients.yaml (`ClientMap`) are both a `WatchedFile`: its `table`
is swapped as a whole, so a request reads it once and keeps its table, and a reload never
disturbs a request in flight. The watcher checks each file's contents (not just its
modification time, which a Kubernetes ConfigMap's symlink swap does not always change) once a
second, and SIGHUP reloads them all at once. A broken file is logged with its reasons and
ignored: the last good table stays in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import web

from auth.oidc.clients import ClientTable
from gateway.config.clients_file import ClientsInvalid, load_clients
from gateway.config.routes import RouteTable
from gateway.config.routes_file import RoutesInvalid, load_routes
from gateway.config.yamlfile import FileInvalid


class _Table(Protocol):
    @property
    def digest(self) -> str: ...


T = TypeVar("T", bound=_Table)
E = TypeVar("E", bound=FileInvalid)


class WatchedFile(ABC, Generic[T, E]):
    """One configuration file's table in force: `reload()` reads the file again and swaps
    the table when it changed and is valid; a subclass says how to read the file."""

    def __init__(
        self,
        table: T,
        path: Path | None,
        *,
        invalid: type[E],
        what: str,
        log: logging.Logger,
    ) -> None:
        self.table = table
        self.path = path
        self.reloads_ok = 0
        self.reloads_failed = 0
        # Called after the new table is in force, or after a file was refused; they let a
        # caller (the tests, a metrics hook) follow reloads without polling.
        self.on_change: list[Callable[[T], None]] = []
        self.on_failure: list[Callable[[E], None]] = []
        self._invalid = invalid
        self._what = what
        self._log = log

    @abstractmethod
    def load(self, path: Path) -> T:
        """The table in the file at `path`; raises the file's FileInvalid subclass."""

    def summary(self, table: T) -> dict[str, object]:
        """What the log says about a new table."""
        return {}

    def reload(self) -> bool:
        """Load the file again; True when a new table is now in force."""
        if self.path is None:
            return False
        try:
            table = self.load(self.path)
        except self._invalid as exc:
            self.reloads_failed += 1
            self._log.error(
                f"{self._what} not reloaded, the last good one stays in force",
                extra={"problems": [str(problem) for problem in exc.problems]},
            )
            for failed in self.on_failure:
                failed(exc)
            return False
        if table.digest == self.table.digest:
            return False
        self.table = table
        self.reloads_ok += 1
        self._log.info(f"{self._what} reloaded", extra=self.summary(table))
        for callback in self.on_change:
            callback(table)
        return True


class RouteMap(WatchedFile[RouteTable, RoutesInvalid]):
    """routes.yaml's route map in force."""

    def __init__(self, table: RouteTable, path: Path | None = None) -> None:
        super().__init__(
            table,
            path,
            invalid=RoutesInvalid,
            what="route map",
            log=logging.getLogger("gateway.routes"),
        )

    def load(self, path: Path) -> RouteTable:
        return load_routes(path)

    def summary(self, table: RouteTable) -> dict[str, object]:
        return {"routes": [route.name for route in table.routes]}


class ClientMap(WatchedFile[ClientTable, ClientsInvalid]):
    """clients.yaml's OpenID Connect clients in force (an `auth.oidc.clients.ClientSource`).

    With `routes`, a reload also refuses a client_id that is a route's name in the route map
    in force then. Secrets are read from the environment at every reload."""

    def __init__(
        self, table: ClientTable, path: Path | None = None, *, routes: RouteMap | None = None
    ) -> None:
        super().__init__(
            table,
            path,
            invalid=ClientsInvalid,
            what="client list",
            log=logging.getLogger("gateway.clients"),
        )
        self._routes = routes

    def load(self, path: Path) -> ClientTable:
        return load_clients(path, routes=None if self._routes is None else self._routes.table)

    def summary(self, table: ClientTable) -> dict[str, object]:
        return {"clients": [client.client_id for client in table.clients]}


def _fingerprint(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


async def watch(watched: WatchedFile[Any, Any], interval: float = 1.0) -> None:
    assert watched.path is not None
    seen = _fingerprint(watched.path)
    while True:
        await asyncio.sleep(interval)
        current = await asyncio.to_thread(_fingerprint, watched.path)
        if current is not None and current != seen:
            seen = current
            watched.reload()


def watcher(
    *files: WatchedFile[Any, Any] | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx that watches the files (None and those without a path are skipped) and
    reloads them all on SIGHUP while the app runs. One watcher for every file: a loop has one
    SIGHUP handler, so a second watcher would silently take the signal from the first."""
    watched = [file for file in files if file is not None and file.path is not None]

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        if not watched:
            yield
            return
        async with _watching(watched):
            yield

    return ctx


@contextlib.asynccontextmanager
async def _watching(watched: list[WatchedFile[Any, Any]]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(watch(file)) for file in watched]
    loop = asyncio.get_running_loop()

    def reload_all() -> None:
        for file in watched:
            file.reload()

    try:
        loop.add_signal_handler(signal.SIGHUP, reload_all)
        hup = True
    except (NotImplementedError, RuntimeError, ValueError):
        hup = False  # not the main thread (tests) or no signals on this platform
    try:
        yield
    finally:
        if hup:
            loop.remove_signal_handler(signal.SIGHUP)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
