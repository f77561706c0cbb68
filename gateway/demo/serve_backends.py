"""`python -m gateway.demo.serve_backends`: the three demo services on their own, on set ports.

`library-gateway demo` starts the services on free loopback ports inside its own process. A
compose file or a Kubernetes demo runs the gateway in one container and the services in
another, so they need a process of their own that listens on an address the gateway can reach
and on ports a routes.yaml can name. Port 0 picks a free port; the line printed at start says
which ports are in use, so a script (or a test) can read them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from gateway.demo.backends import catalogue_app, digital_app, reservations_app

DEFAULT_PORTS = {"catalogue": 8101, "reservations": 8102, "digital": 8103}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.demo.serve_backends",
        description="Run the demo catalogue, reservations and digital services.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (0.0.0.0 inside a container)"
    )
    for name, port in DEFAULT_PORTS.items():
        parser.add_argument(
            f"--{name}",
            type=int,
            default=port,
            metavar="PORT",
            help=f"port of the {name} service (default {port}; 0: any free)",
        )
    return parser


def _bound_port(site: web.TCPSite) -> int:
    server = site._server
    assert isinstance(server, asyncio.Server) and server.sockets
    return int(server.sockets[0].getsockname()[1])


async def serve(host: str, ports: dict[str, int], stop: asyncio.Event) -> None:
    """Serve the three services until `stop` is set; print their ports once all listen."""
    apps = {
        "catalogue": catalogue_app(),
        "reservations": reservations_app(),
        "digital": digital_app(),
    }
    runners: list[web.AppRunner] = []
    try:
        bound = {}
        for name, app in apps.items():
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            runners.append(runner)
            site = web.TCPSite(runner, host, ports[name])
            await site.start()
            bound[name] = _bound_port(site)
        print(
            "demo backends listening: "
            + ", ".join(f"{name}={port}" for name, port in bound.items()),
            flush=True,
        )
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


async def _main(host: str, ports: dict[str, int]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await serve(host, ports, stop)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    ports = {name: int(getattr(args, name)) for name in DEFAULT_PORTS}
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.host, ports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
