"""`library-gateway demo`: the whole thing on one machine, with nothing installed.

Starts the embedded PostgreSQL, a mail catcher (a real SMTP server that prints what it gets),
the three demo services on free loopback ports, a public library's own site on 127.0.0.2 that
logs patrons in through the gateway (OpenID Connect, registered as a client with a secret made
at start), and the gateway on 127.0.0.1:PORT with a route map pointing at the services;
creates (or resets) the demo patron; prints where to go. Ctrl-C stops everything, the database
server included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import secrets
import signal
import sys

from aiohttp import web

from auth.credentials.passwords import PasswordHasher
from auth.store.accounts import Accounts
from gateway.app import create_app
from gateway.cli import bootstrap
from gateway.cli.main import load_settings
from gateway.config.clients_file import parse_clients
from gateway.config.reload import ClientMap, RouteMap
from gateway.config.routes_file import parse_routes
from gateway.demo import public_library
from gateway.demo.backends import catalogue_app, digital_app, reservations_app
from gateway.demo.mailcatcher import MailCatcher
from gateway.ops import logs
from gateway.server.runner import GatewayRunner

DEMO_PASS_NUMBER = "20261129"
DEMO_USERNAME = "demo.patron"
DEMO_EMAIL = "demo.patron@example.org"
DEMO_PASSWORD = "reading-room-lamp"

DEMO_ROUTES = """\
routes:
  - name: catalogue
    prefix: /catalogue
    backend: http://127.0.0.1:{catalogue}
    auth: optional
  - name: reservations
    prefix: /reservations
    backend: http://127.0.0.1:{reservations}
    auth: required
    public: [/reservations/opening-hours]
  - name: digital
    prefix: /digital
    backend: http://127.0.0.1:{digital}
    auth: required
    timeout: 120
"""

PUBLIC_LIBRARY_ID = "public-library"
PUBLIC_LIBRARY_SECRET_ENV = "PUBLIC_LIBRARY_SECRET"
DEMO_CLIENTS = f"""\
clients:
  - client_id: {PUBLIC_LIBRARY_ID}
    name: {public_library.NAME}
    redirect_uris: ["{{redirect_uri}}"]
    secret_env: {PUBLIC_LIBRARY_SECRET_ENV}
    theme:
      name: {public_library.NAME}
      colour: "{public_library.HOUSE_COLOUR}"
      text_colour: "{public_library.TEXT_COLOUR}"
"""


async def _start_backend(app: web.Application) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.Server) and server.sockets
    return runner, int(server.sockets[0].getsockname()[1])


async def _start_public_library(issuer: str, secret: str) -> tuple[web.AppRunner, str]:
    """The public library's site on its own loopback address; its runner and its URL."""
    sock = public_library.listening_socket()
    url = f"http://{public_library.HOST}:{sock.getsockname()[1]}"
    registration = public_library.Registration(
        issuer=issuer,
        client_id=PUBLIC_LIBRARY_ID,
        client_secret=secret,
        redirect_uri=f"{url}/callback",
    )
    runner = web.AppRunner(public_library.public_library_app(registration), access_log=None)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException:
        sock.close()
        await runner.cleanup()
        raise
    return runner, url


async def ensure_demo_patron(pool_url: str) -> None:
    hasher = PasswordHasher(max_workers=1)
    try:
        password_hash = await hasher.hash(DEMO_PASSWORD)
    finally:
        hasher.close()
    async with bootstrap.migrated_pool(pool_url) as pool:
        accounts = Accounts(pool)
        existing = await accounts.by_login_name(DEMO_PASS_NUMBER)
        if existing is None:
            await accounts.add(
                pass_number=DEMO_PASS_NUMBER,
                email=DEMO_EMAIL,
                username=DEMO_USERNAME,
                password_hash=password_hash,
            )
        else:
            await accounts.set_password_hash(existing.id, password_hash)


async def run_demo(args: argparse.Namespace) -> None:
    catcher = MailCatcher(out=sys.stdout)
    catcher.start()
    os.environ.setdefault("GATEWAY_SMTP_URL", catcher.url)
    settings = load_settings(port=args.port, data_dir=args.data_dir, host="127.0.0.1")
    runners: list[web.AppRunner] = []
    try:
        ports = {}
        for name, app in (
            ("catalogue", catalogue_app()),
            ("reservations", reservations_app()),
            ("digital", digital_app()),
        ):
            runner, ports[name] = await _start_backend(app)
            runners.append(runner)
        # Made at every start and handed over in memory: written nowhere.
        secret = secrets.token_urlsafe(32)
        runner, library_url = await _start_public_library(settings.public_url, secret)
        runners.append(runner)
        table = parse_routes(DEMO_ROUTES.format(**ports), "demo routes")
        route_map = RouteMap(table)
        clients = parse_clients(
            DEMO_CLIENTS.format(redirect_uri=f"{library_url}/callback"),
            "demo clients",
            env={PUBLIC_LIBRARY_SECRET_ENV: secret},
            routes=table,
        )
        database_url = await asyncio.to_thread(bootstrap.database_url, settings)
        await ensure_demo_patron(database_url)
        gateway = create_app(
            settings,
            route_map,
            database_url=database_url,
            cookie_keys=bootstrap.cookie_keys(settings),
            client_map=ClientMap(clients, routes=route_map),
        )
        runner = GatewayRunner(
            gateway,
            access_log_class=logs.AccessLogger,
            access_log=logging.getLogger("gateway.access"),
        )
        await runner.setup()
        runners.insert(0, runner)
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        print(_banner(settings.public_url, library_url), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        print("\nstopping the demo…", flush=True)
    finally:
        for runner in runners:
            await runner.cleanup()
        catcher.stop()


def _banner(url: str, library_url: str) -> str:
    return f"""
  library-gateway demo is running

    open        {url}/catalogue
    log in as   {DEMO_PASS_NUMBER} (pass number) or {DEMO_USERNAME}
    password    {DEMO_PASSWORD}

    also try    {url}/reservations/   (login required)
                {url}/digital/        (login required, streams a 64 MiB book)
                {url}/.well-known/jwks.json

    a second library, {public_library.NAME}, logs patrons in through the gateway:
                {library_url}/
                (logged in at the catalogue already? then no second login there)

  Mail the gateway sends is printed here. Press Ctrl-C to stop everything.
"""


def demo_command(args: argparse.Namespace) -> int:
    settings = load_settings(port=args.port, data_dir=args.data_dir)
    logs.configure(settings.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(args))
    return 0
