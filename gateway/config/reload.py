"""The configuration files in force, and how they change while the gateway runs.

institutions.yaml (`InstitutionMap`), routes.yaml (`RouteMap`) and clients.yaml (`ClientMap`)
are each a `WatchedFile`: its `table`
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

from auth.memberships import InstitutionTable, Requirement
from auth.oidc.clients import ClientTable
from gateway.config.clients_file import ClientsInvalid, load_clients
from gateway.config.institutions_file import InstitutionsInvalid, load_institutions
from gateway.config.routes import RouteTable
from gateway.config.routes_file import RoutesInvalid, load_routes
from gateway.config.yamlfile import FileInvalid, Problem


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
        # The last read of the file was refused: the table in force is an older one.
        self.refused = False
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
            self.refused = True
            self._log.error(
                f"{self._what} not reloaded, the last good one stays in force",
                extra={"problems": [str(problem) for problem in exc.problems]},
            )
            for failed in self.on_failure:
                failed(exc)
            return False
        self.refused = False
        if table.digest == self.table.digest:
            return False
        self.table = table
        self.reloads_ok += 1
        self._log.info(f"{self._what} reloaded", extra=self.summary(table))
        for callback in self.on_change:
            callback(table)
        return True


class InstitutionMap(WatchedFile[InstitutionTable, InstitutionsInvalid]):
    """institutions.yaml's institutions in force (an `auth.services.InstitutionSource`).

    A reload that would drop an institution, or a membership type, that a `require:` rule of
    the routes or clients in force names is refused like a broken file: such a rule would
    refuse every patron. Which institution is the default is read once, at start (the
    accounts made since depend on it): changing it takes a restart."""

    def __init__(self, table: InstitutionTable, path: Path | None = None) -> None:
        super().__init__(
            table,
            path,
            invalid=InstitutionsInvalid,
            what="institution list",
            log=logging.getLogger("gateway.institutions"),
        )
        # Set once the files that name institutions are loaded (they are checked against
        # this map, so they come after it).
        self.routes: RouteMap | None = None
        self.clients: ClientMap | None = None

    def load(self, path: Path) -> InstitutionTable:
        table = load_institutions(path)
        problems = [
            Problem(str(path), 0, f"{where} requires {reason}; {_KEEP_IT}")
            for where, requirement in self._rules()
            if (reason := _unmet(requirement, table)) is not None
        ]
        if problems:
            raise InstitutionsInvalid(problems)
        return table

    def _rules(self) -> list[tuple[str, Requirement]]:
        rules = []
        if self.routes is not None:
            table = self.routes.table
            for route in table.routes:
                if route.require is not None:
                    where = f"{table.source}:{route.line}: route {route.name}"
                    rules.append((where, route.require))
        if self.clients is not None:
            clients = self.clients.table
            for client in clients.clients:
                if client.require is not None:
                    where = f"{clients.source}:{client.line}: client {client.client_id}"
                    rules.append((where, client.require))
        return rules

    def summary(self, table: InstitutionTable) -> dict[str, object]:
        return {"institutions": [institution.id for institution in table.institutions]}


_KEEP_IT = "keep it in the file, or change the rule first"


def _unmet(requirement: Requirement, table: InstitutionTable) -> str | None:
    """What of `requirement` the institutions of `table` no longer offer, if anything."""
    institution = table.get(requirement.institution)
    if institution is None:
        return f"the institution '{requirement.institution}'"
    missing = sorted(requirement.types - set(institution.types)) if institution.types else []
    if missing:
        return f"the membership type(s) {', '.join(missing)} of '{institution.id}'"
    return None


class RouteMap(WatchedFile[RouteTable, RoutesInvalid]):
    """routes.yaml's route map in force; `require:` rules are checked against `institutions`
    in force at each reload (None: the one built in)."""

    def __init__(
        self,
        table: RouteTable,
        path: Path | None = None,
        *,
        institutions: InstitutionMap | None = None,
    ) -> None:
        super().__init__(
            table,
            path,
            invalid=RoutesInvalid,
            what="route map",
            log=logging.getLogger("gateway.routes"),
        )
        self._institutions = institutions

    def load(self, path: Path) -> RouteTable:
        institutions = None if self._institutions is None else self._institutions.table
        return load_routes(path, institutions)

    def summary(self, table: RouteTable) -> dict[str, object]:
        return {"routes": [route.name for route in table.routes]}


class ClientMap(WatchedFile[ClientTable, ClientsInvalid]):
    """clients.yaml's OpenID Connect clients in force (an `auth.oidc.clients.ClientSource`).

    With `routes`, a reload also refuses a client_id that is a route's name in the route map
    in force then; `require:` rules are checked against `institutions` in force (None: the
    one built in). Secrets are read from the environment at every reload."""

    def __init__(
        self,
        table: ClientTable,
        path: Path | None = None,
        *,
        routes: RouteMap | None = None,
        institutions: InstitutionMap | None = None,
    ) -> None:
        super().__init__(
            table,
            path,
            invalid=ClientsInvalid,
            what="client list",
            log=logging.getLogger("gateway.clients"),
        )
        self._routes = routes
        self._institutions = institutions

    def load(self, path: Path) -> ClientTable:
        return load_clients(
            path,
            routes=None if self._routes is None else self._routes.table,
            institutions=None if self._institutions is None else self._institutions.table,
        )

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

    def retry_refused(changed: WatchedFile[Any, Any]) -> Callable[[object], None]:
        """A file refused because of another (a client named like a route, a rule naming an
        institution not yet listed) is read again once that other file changes: the
        operator who fixes the other file need not touch this one too."""

        def retry(_table: object) -> None:
            for file in watched:
                if file is not changed and file.refused:
                    file.reload()

        return retry

    retries = [(file, retry_refused(file)) for file in watched]
    for file, retry in retries:
        file.on_change.append(retry)

    before = signal.getsignal(signal.SIGHUP)
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
            # asyncio leaves SIGHUP's default action (ending the process) behind; put back
            # what was there (`run` ignores it), so a reload while the gateway shuts down
            # does not cut its last cleanup short.
            if before is not None:
                signal.signal(signal.SIGHUP, before)
        for file, retry in retries:
            file.on_change.remove(retry)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
