"""`library-gateway run`: one process, or a supervisor of N worker processes on one port."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path

from aiohttp import web

from gateway.app import create_app
from gateway.cli import bootstrap
from gateway.cli.main import (
    clients_path,
    institutions_path,
    load_clients_or_report,
    load_institutions_or_report,
    load_routes_or_report,
    load_settings,
)
from gateway.config.clients_file import load_clients
from gateway.config.institutions_file import load_institutions
from gateway.config.reload import ClientMap, InstitutionMap, RouteMap
from gateway.config.routes_file import load_routes
from gateway.config.settings import Settings, SettingsError
from gateway.ops import logs, tracing
from gateway.ops.admin import create_admin_app
from gateway.server.runner import AdminRunner, GatewayRunner

log = logging.getLogger("gateway")


def _event_loop_policy() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def run_command(args: argparse.Namespace) -> int:
    # SIGHUP (`systemctl reload`) may come while the gateway starts, before its file watcher
    # listens for it, and its default action would end the process: ignore it until then.
    # Nothing is lost: the files are read as they are now, after this line.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    settings = load_settings(
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        workers=args.workers,
        data_dir=args.data_dir,
    )
    logs.configure(settings.log_level)
    try:
        tracing.check()  # before any worker starts: an OTLP setting it cannot use stops here
    except SettingsError as exc:
        raise SystemExit(f"library-gateway: {exc}") from None
    institutions_file = institutions_path(args.routes, args.institutions)
    institutions = None
    if institutions_file is not None:
        institutions = load_institutions_or_report(institutions_file)
        if institutions is None:
            return 1
    table = load_routes_or_report(args.routes, institutions)
    if table is None:
        return 1
    clients_file = clients_path(args.routes, args.clients)
    clients = (
        None if clients_file is None else load_clients_or_report(clients_file, table, institutions)
    )
    if clients_file is not None and clients is None:
        return 1
    database_url = bootstrap.database_url(settings)
    if settings.workers <= 1:
        institution_map = (
            None if institutions is None else InstitutionMap(institutions, institutions_file)
        )
        route_map = RouteMap(table, args.routes, institutions=institution_map)
        client_map = (
            None
            if clients is None
            else ClientMap(clients, clients_file, routes=route_map, institutions=institution_map)
        )
        serve(
            settings,
            route_map,
            database_url,
            reuse_port=False,
            client_map=client_map,
            institution_map=institution_map,
        )
        return 0
    return supervise(settings, args.routes, clients_file, database_url, institutions_file)


def serve(
    settings: Settings,
    route_map: RouteMap,
    database_url: str,
    *,
    reuse_port: bool,
    admin: bool = True,
    client_map: ClientMap | None = None,
    institution_map: InstitutionMap | None = None,
) -> None:
    _event_loop_policy()
    if institution_map is not None:
        # A reload of institutions.yaml is checked against the rules these files hold.
        institution_map.routes = route_map
        institution_map.clients = client_map
    app = create_app(
        settings,
        route_map,
        database_url=database_url,
        cookie_keys=bootstrap.cookie_keys(settings),
        client_map=client_map,
        institution_map=institution_map,
        # Made in the worker itself: the exporting thread does not survive a fork.
        tracing=tracing.from_environment(settings.public_url),
    )
    if admin and settings.admin_port:
        app.cleanup_ctx.append(_admin_site(settings, app))
    asyncio.run(_serve_until_signalled(app, settings, reuse_port))


async def _serve_until_signalled(
    app: web.Application, settings: Settings, reuse_port: bool
) -> None:
    runner = GatewayRunner(
        app,
        access_log_class=logs.AccessLogger,
        access_log=logging.getLogger("gateway.access"),
        shutdown_timeout=settings.shutdown_grace,
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.port, reuse_port=reuse_port).start()
        _freeze_startup_objects()
        log.info(
            "gateway listening",
            extra={
                "url": settings.public_url,
                "host": settings.host,
                "port": settings.port,
                "pid": os.getpid(),
            },
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    finally:
        # Stops listening, lets requests in flight finish within the grace period, then
        # runs the app's shutdown and cleanup.
        await runner.cleanup()


def _admin_site(settings: Settings, app: web.Application):  # type: ignore[no-untyped-def]
    async def ctx(_app: web.Application):  # type: ignore[no-untyped-def]
        runner = AdminRunner(create_admin_app(app), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.admin_host, settings.admin_port, reuse_port=True)
        await site.start()
        yield
        await runner.cleanup()

    return ctx


def _freeze_startup_objects() -> None:
    """Everything made while starting (modules, templates, the route table, the pool) lives
    as long as the process: take it out of the cyclic collector's sight. Otherwise every full
    collection under load walks all of it, a pause of 30-40 ms that shows as the p99 of every
    request in flight (measured with gc.callbacks under the benchmark)."""
    gc.collect()
    gc.freeze()


def supervise(
    settings: Settings,
    routes_path: Path,
    clients_file: Path | None,
    database_url: str,
    institutions_file: Path | None = None,
) -> int:
    """Run N workers on one port (SO_REUSEPORT) and replace any that dies."""
    if not hasattr(socket, "SO_REUSEPORT"):
        print("--workers needs SO_REUSEPORT (Linux, BSD, macOS)", file=sys.stderr)
        return 1
    # Migrations and the first signing key are made once, here, before any worker starts.
    asyncio.run(_prepare(database_url, settings))
    children: dict[int, int] = {}
    stopping = False

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            # Not the supervisor's forwarding (to the pids it knew at the fork, which may be
            # gone and reused by then): ignored until this worker's watcher listens.
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            try:
                institution_map = None
                if institutions_file is not None:
                    institution_map = InstitutionMap(
                        load_institutions(institutions_file), institutions_file
                    )
                institutions = None if institution_map is None else institution_map.table
                route_map = RouteMap(
                    load_routes(routes_path, institutions),
                    routes_path,
                    institutions=institution_map,
                )
                client_map = None
                if clients_file is not None:
                    clients = load_clients(
                        clients_file, routes=route_map.table, institutions=institutions
                    )
                    client_map = ClientMap(
                        clients, clients_file, routes=route_map, institutions=institution_map
                    )
                serve(
                    settings,
                    route_map,
                    database_url,
                    reuse_port=True,
                    admin=index == 0,
                    client_map=client_map,
                    institution_map=institution_map,
                )
            finally:
                os._exit(0)
        children[pid] = index

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        if signum in (signal.SIGTERM, signal.SIGINT):
            stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):  # already gone
                os.kill(pid, signal.SIGTERM if signum == signal.SIGINT else signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    for index in range(settings.workers):
        spawn(index)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid not in children:
            continue
        index = children.pop(pid)
        _forget_worker_metrics(pid)
        if not stopping:
            log.error(
                "worker died; starting a new one",
                extra={"pid": pid, "status": status, "worker": index},
            )
            time.sleep(0.5)  # do not spin if a worker dies at once on every start
            if not stopping:  # a SIGTERM may have come during the pause
                spawn(index)
    return 0


def _forget_worker_metrics(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


async def _prepare(database_url: str, settings: Settings) -> None:
    from auth.signing import KeyStore

    async with bootstrap.migrated_pool(database_url, settings) as pool:
        await KeyStore(pool, bootstrap.cookie_keys(settings)).load()
