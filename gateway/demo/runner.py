"""`library-gateway demo`: the whole thing on one machine, with nothing installed.

Starts the embedded PostgreSQL, a mail catcher (a real SMTP server that prints what it gets),
the three demo services on free loopback ports, a public library's own site on 127.0.0.2 that
logs patrons in through the gateway (OpenID Connect, registered as a client with a secret made
at start), and the gateway on 127.0.0.1:PORT with a route map pointing at the services;
creates (or resets) the demo patrons; prints where to go. Ctrl-C stops everything, the database
server included.

Two institutions (`DEMO_INSTITUTIONS`): the national library (`kb`, the default) and the
public library (`obs`). The digital library requires a valid KB membership and the public
library's site a membership of its own; the demo patron holds both, the second demo patron
only a KB membership that ran out, so the digital library shows them why not.
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
from datetime import date

from aiohttp import web

from auth.audit import NO_ORIGIN, Actor
from auth.credentials.passwords import PasswordHasher
from auth.memberships import Membership
from auth.store.accounts import Accounts
from auth.store.memberships import Memberships, MembershipTaken
from gateway.app import create_app
from gateway.cli import bootstrap
from gateway.cli.main import load_settings
from gateway.cli.staff import staff_management
from gateway.config.clients_file import parse_clients
from gateway.config.institutions_file import parse_institutions
from gateway.config.reload import ClientMap, InstitutionMap, RouteMap
from gateway.config.routes_file import parse_routes
from gateway.config.settings import Settings
from gateway.demo import public_library
from gateway.demo.backends import catalogue_app, digital_app, reservations_app
from gateway.demo.mailcatcher import MailCatcher
from gateway.ops import logs
from gateway.server.runner import GatewayRunner

DEMO_PASS_NUMBER = "20261129"
DEMO_USERNAME = "demo.patron"
DEMO_EMAIL = "demo.patron@example.org"
DEMO_PASSWORD = "reading-room-lamp"
# The demo patron's pass of the public library.
DEMO_LIBRARY_PASS_NUMBER = "RL-55012"
# A second patron, whose KB membership ran out: the digital library refuses them (403).
LAPSED_PASS_NUMBER = "20240131"
LAPSED_USERNAME = "lapsed.patron"
LAPSED_EMAIL = "lapsed.patron@example.org"
LAPSED_UNTIL = date(2024, 1, 31)

# The demo's staff console admin: activated through the link the mail catcher prints.
DEMO_STAFF_EMAIL = "demo.admin@example.org"

KB = "kb"
PUBLIC_LIBRARY_INSTITUTION = "obs"
DEMO_INSTITUTIONS = f"""\
institutions:
  - id: {KB}
    name: Koninklijke Bibliotheek
    renew_url: https://www.kb.nl/lid-worden
    default: true
    types: [adult, youth, student]
  - id: {PUBLIC_LIBRARY_INSTITUTION}
    name: {public_library.NAME}
    renew_url: https://rivierenland.example.nl/lid-worden
    theme:
      name: {public_library.NAME}
      colour: "{public_library.HOUSE_COLOUR}"
      text_colour: "{public_library.TEXT_COLOUR}"
"""

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
    require: {{institution: kb}}
    timeout: 120
"""

PUBLIC_LIBRARY_ID = "public-library"
PUBLIC_LIBRARY_SECRET_ENV = "PUBLIC_LIBRARY_SECRET"
DEMO_CLIENTS = f"""\
clients:
  - client_id: {PUBLIC_LIBRARY_ID}
    name: {public_library.NAME}
    redirect_uris: ["{{site}}{public_library.CALLBACK_PATH}"]
    backchannel_logout_uri: "{{site}}{public_library.BACKCHANNEL_LOGOUT_PATH}"
    secret_env: {PUBLIC_LIBRARY_SECRET_ENV}
    theme:
      name: {public_library.NAME}
      colour: "{public_library.HOUSE_COLOUR}"
      text_colour: "{public_library.TEXT_COLOUR}"
    require:
      institution: {PUBLIC_LIBRARY_INSTITUTION}
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
        redirect_uri=f"{url}{public_library.CALLBACK_PATH}",
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
    """The demo patrons, made or reset: the demo patron (a KB pass without end and a pass of
    the public library) and the lapsed patron (a KB adult membership that ran out)."""
    hasher = PasswordHasher(max_workers=1)
    try:
        password_hash = await hasher.hash(DEMO_PASSWORD)
    finally:
        hasher.close()
    async with bootstrap.migrated_pool(pool_url) as pool:
        accounts = Accounts(pool)
        memberships = Memberships(pool)
        # The passes accounts are made with are the KB's (the gateway says so again at start).
        await memberships.settle_default(KB)
        for pass_number, username, email in (
            (DEMO_PASS_NUMBER, DEMO_USERNAME, DEMO_EMAIL),
            (LAPSED_PASS_NUMBER, LAPSED_USERNAME, LAPSED_EMAIL),
        ):
            existing = await accounts.by_login_name(pass_number)
            if existing is None:
                existing = await accounts.add(
                    pass_number=pass_number,
                    email=email,
                    username=username,
                    password_hash=password_hash,
                )
            else:
                await accounts.set_password_hash(existing.id, password_hash)
            if pass_number == DEMO_PASS_NUMBER:
                with contextlib.suppress(MembershipTaken):  # made at an earlier start
                    await memberships.add(
                        existing.id,
                        Membership(PUBLIC_LIBRARY_INSTITUTION, DEMO_LIBRARY_PASS_NUMBER, "adult"),
                    )
            else:
                await memberships.change(KB, pass_number, type="adult", valid_until=LAPSED_UNTIL)


async def demo_staff_pending(pool_url: str, settings: Settings) -> bool:
    """Whether the demo's staff admin still needs an activation link: not made yet, or made
    and never activated."""
    async with bootstrap.migrated_pool(pool_url, settings) as pool:
        member = await staff_management(pool, settings).members.by_email(DEMO_STAFF_EMAIL)
    return member is None or member.state == "pending"


async def invite_demo_staff(pool_url: str, settings: Settings) -> None:
    """Mail the demo's staff admin an activation link (a new one when the first was never
    used). Called once the gateway runs: its outbox worker sends the mail at once to the mail
    catcher, which prints it below the banner."""
    async with bootstrap.migrated_pool(pool_url, settings) as pool:
        management = staff_management(pool, settings)
        member = await management.members.by_email(DEMO_STAFF_EMAIL)
        demo = Actor("operator", "demo")
        if member is None:
            await management.invite(
                DEMO_STAFF_EMAIL, "admin", actor=demo, origin=NO_ORIGIN, reason="demo", lang="en"
            )
        elif member.state == "pending":
            await management.start_over(member.id, actor=demo, origin=NO_ORIGIN, lang="en")


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
        institution_map = InstitutionMap(parse_institutions(DEMO_INSTITUTIONS, "demo institutions"))
        table = parse_routes(DEMO_ROUTES.format(**ports), "demo routes", institution_map.table)
        route_map = RouteMap(table, institutions=institution_map)
        clients = parse_clients(
            DEMO_CLIENTS.format(site=library_url),
            "demo clients",
            env={PUBLIC_LIBRARY_SECRET_ENV: secret},
            routes=table,
            institutions=institution_map.table,
        )
        database_url = await asyncio.to_thread(bootstrap.database_url, settings)
        await ensure_demo_patron(database_url)
        staff_mailed = await demo_staff_pending(database_url, settings)
        gateway = create_app(
            settings,
            route_map,
            database_url=database_url,
            cookie_keys=bootstrap.cookie_keys(settings),
            client_map=ClientMap(clients, routes=route_map, institutions=institution_map),
            institution_map=institution_map,
        )
        runner = GatewayRunner(
            gateway,
            access_log_class=logs.AccessLogger,
            access_log=logging.getLogger("gateway.access"),
        )
        await runner.setup()
        runners.insert(0, runner)
        await web.TCPSite(runner, "127.0.0.1", args.port).start()
        print(_banner(settings.public_url, library_url, staff_mailed=staff_mailed), flush=True)
        if staff_mailed:
            await invite_demo_staff(database_url, settings)
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


def _banner(url: str, library_url: str, *, staff_mailed: bool) -> str:
    staff = (
        "its activation link (set a password, enrol an authenticator app; passkeys\n"
        "                need the console at a host name, not an IP address) is in the mail\n"
        "                printed below"
        if staff_mailed
        else "sign in with the password and the second factor you chose at activation"
    )
    return f"""
  library-gateway demo is running

    open        {url}/catalogue
    log in as   {DEMO_PASS_NUMBER} (pass number) or {DEMO_USERNAME}
    password    {DEMO_PASSWORD}

    or as       {LAPSED_PASS_NUMBER} (pass number) or {LAPSED_USERNAME}, same password:
                a KB membership that ran out on {LAPSED_UNTIL.isoformat()}, so
                {url}/digital/ answers "membership required"

    also try    {url}/reservations/   (login required)
                {url}/digital/        (a valid KB membership required, streams a 64 MiB book)
                {url}/.well-known/jwks.json

    a second library, {public_library.NAME}, logs patrons in through the gateway:
                {library_url}/
                (logged in at the catalogue already? then no second login there;
                it requires a membership of its own, which only the demo patron holds)

    the helpdesk's staff console:
                {url}/staff/   as {DEMO_STAFF_EMAIL} (an admin):
                {staff}

  Mail the gateway sends is printed here. Press Ctrl-C to stop everything.
"""


def demo_command(args: argparse.Namespace) -> int:
    settings = load_settings(port=args.port, data_dir=args.data_dir)
    logs.configure(settings.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_demo(args))
    return 0
