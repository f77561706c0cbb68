"""A patron's view: the real gateway, the three demo services and a real SMTP catcher on
127.0.0.1, driven by a real headless Chromium through Playwright.

Everything runs in one event loop per test module (Playwright's async API, the aiohttp
servers, the database pool), so the module pays for starting Chromium and the gateway once;
each test gets fresh browser contexts (a context has cookies of its own, like a new browser
profile) and its own patrons. Closing a context is not closing a browser: the test that
closes the browser starts a Chromium of its own on a profile kept on disk.

Chromium is not downloaded by Playwright: the tests use the system's (`$CHROMIUM`, else
Debian's /usr/bin/chromium) and fail, not skip, when it is missing, so a green run always
means the pages were seen in a browser. Every step's screenshot lands in
test-artifacts/screenshots/; docs/img/login.png, account.png, account-sessions.png and
login-client.png are copies of the `readme-*.png` ones.
"""

from __future__ import annotations

import io
import itertools
import os
import re
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.fernet import Fernet, MultiFernet
from playwright.async_api import (
    Browser,
    BrowserContext,
    Page,
    ViewportSize,
    async_playwright,
    expect,
)

from auth.credentials.passwords import PasswordHasher
from auth.mail import SmtpTransport
from auth.pages.activation import Invitations
from auth.services import SERVICES, AuthServices
from auth.store.accounts import Account
from gateway.app import create_app
from gateway.config.clients_file import parse_clients
from gateway.config.institutions_file import parse_institutions
from gateway.config.reload import ClientMap, InstitutionMap, RouteMap
from gateway.config.routes_file import parse_routes
from gateway.config.settings import Settings
from gateway.demo.backends import catalogue_app, digital_app, reservations_app
from gateway.demo.mailcatcher import MailCatcher
from gateway.demo.runner import DEMO_INSTITUTIONS, DEMO_ROUTES
from gateway.server.runner import GatewayRunner
from tests import npm, system_packages
from tests.helpers import FAST_ARGON2, link_in, mail_for

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
AXE_DIR = npm.CACHE / "axe"
AXE_SCRIPT = AXE_DIR / "node_modules" / "axe-core" / "axe.min.js"
# Pinned: a new axe-core release brings new rules, and must not turn the suite red on its own.
# Raise it on purpose, and fix what the new rules find.
AXE_VERSION = "4.14.1"
# Headless, and quiet: no first-run UI, no calls home, nothing but the pages under test.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1000, "height": 800}
# Playwright's own limit per action or expectation; generous, because a loaded CI machine
# is slow, and it only matters when a test is failing anyway.
PLAYWRIGHT_TIMEOUT_MS = 15_000
expect.set_options(timeout=PLAYWRIGHT_TIMEOUT_MS)
PASSWORD = "a quiet corner of the reading room"
LOCALES = {"nl": "nl-NL", "en": "en-GB"}

# The same route map the demo runs.
ROUTES = DEMO_ROUTES
# A connected library in its own colours (its callback is never followed in these tests).
CLIENT_NAME = "De Online Bibliotheek"
CLIENT_COLOUR = "#e4003b"
CLIENT_REDIRECT = "https://online.example.nl/callback"
# A site of another organisation: its patrons are asked once whether to share their details.
PARTNER_ID = "partner-site"
PARTNER_NAME = "Leesclub Noord"
PARTNER_REDIRECT = "https://leesclub.example.nl/callback"
CLIENTS = f"""\
clients:
  - client_id: online-library
    name: {CLIENT_NAME}
    redirect_uris: [{CLIENT_REDIRECT}]
    theme: {{name: {CLIENT_NAME}, colour: "{CLIENT_COLOUR}", text_colour: "#ffffff"}}
  - client_id: {PARTNER_ID}
    name: {PARTNER_NAME}
    redirect_uris: [{PARTNER_REDIRECT}]
    first_party: false
"""

_numbers = itertools.count(10**9 + secrets.randbelow(10**9))


def chromium_executable() -> str:
    """The system Chromium the tests drive; a missing one fails the test with the fix."""
    system_packages.require("chromium")
    return os.environ.get("CHROMIUM") or system_packages.CHROMIUM


def _listening_socket() -> socket.socket:
    """A socket bound to a free loopback port, so a server's URL is known before it starts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


async def _serve(
    app: web.Application, sock: socket.socket, runner_class: type[web.AppRunner] = web.AppRunner
) -> web.AppRunner:
    runner = runner_class(app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    return runner


@dataclass
class Library:
    """The running gateway with its services, as a test sees it."""

    url: str
    app: web.Application
    catcher: MailCatcher

    @property
    def services(self) -> AuthServices:
        return self.app[SERVICES]

    async def add_patron(
        self,
        *,
        username: str | None = None,
        password: str | None = PASSWORD,
        pass_number: str | None = None,
        email: str | None = None,
    ) -> Account:
        """A patron with a password (or, with password=None, one still to be activated)."""
        number = pass_number or str(next(_numbers))
        password_hash = await self.services.hasher.hash(password) if password else None
        return await self.services.accounts.add(
            pass_number=number,
            email=email or f"patron{number}@example.org",
            username=username,
            password_hash=password_hash,
        )

    async def invite(self, pass_number: str, email: str, lang: str) -> str:
        """Invite a new member as the CLI does, and return the link their mail carries."""
        services = self.services
        invitations = Invitations(
            accounts=services.accounts,
            links=services.links,
            composer=services.composer,
            public_url=services.public_url,
            ttl=services.activation_ttl,
        )
        await invitations.send(pass_number, email, lang)
        return await self.mailed_link(email, "activate", lang)

    async def mailed_link(self, recipient: str, kind: str, lang: str) -> str:
        """The link in the newest mail of this kind that reached `recipient` over SMTP."""
        return link_in(await mail_for(self.catcher, recipient, kind, lang))

    def path(self, url: str) -> str:
        """`url` on this gateway, without its origin (fails if it points anywhere else)."""
        assert url.startswith(self.url + "/"), f"{url} is not on the gateway {self.url}"
        return url[len(self.url) :]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def library(
    database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Library]:
    """Demo services, mail catcher and gateway, wired like `library-gateway demo`."""
    runners: list[web.AppRunner] = []
    hasher = PasswordHasher(max_workers=2, **FAST_ARGON2)
    with MailCatcher(out=io.StringIO()) as catcher:
        try:
            ports: dict[str, int] = {}
            for name, app in (
                ("catalogue", catalogue_app()),
                ("reservations", reservations_app()),
                ("digital", digital_app(book_size=64 * 1024)),
            ):
                sock = _listening_socket()
                ports[name] = sock.getsockname()[1]
                runners.append(await _serve(app, sock))
            sock = _listening_socket()
            port = sock.getsockname()[1]
            settings = Settings.from_env(
                {}, host="127.0.0.1", port=port, data_dir=tmp_path_factory.mktemp("gateway")
            )
            # The demo's institutions: its digital library requires a valid KB membership.
            institutions = InstitutionMap(parse_institutions(DEMO_INSTITUTIONS))
            table = parse_routes(ROUTES.format(**ports), "routes.yaml", institutions.table)
            route_map = RouteMap(table, institutions=institutions)
            gateway = create_app(
                settings,
                route_map,
                client_map=ClientMap(parse_clients(CLIENTS, routes=table), routes=route_map),
                institution_map=institutions,
                database_url=database_url,
                cookie_keys=MultiFernet([Fernet(Fernet.generate_key())]),
                hasher=hasher,
                mail_transport=SmtpTransport(catcher.url),
            )
            # Served as `library-gateway run` serves it (its front door and held writes).
            runners.insert(0, await _serve(gateway, sock, GatewayRunner))
            yield Library(settings.public_url, gateway, catcher)
        finally:
            for runner in runners:
                await runner.cleanup()
            hasher.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium_executable()
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


NewContext = Callable[..., Awaitable[BrowserContext]]


@pytest_asyncio.fixture(loop_scope="module")
async def new_context(browser: Browser, library: Library) -> AsyncIterator[NewContext]:
    """Open a browser (a fresh context) on the gateway; `lang` picks its Accept-Language.
    Every context is closed at the end of the test, if the test has not closed it."""
    opened: list[BrowserContext] = []

    async def open_context(lang: str = "en", **options: Any) -> BrowserContext:
        options.setdefault("viewport", VIEWPORT)
        context = await browser.new_context(base_url=library.url, locale=LOCALES[lang], **options)
        context.set_default_timeout(PLAYWRIGHT_TIMEOUT_MS)
        opened.append(context)
        return context

    yield open_context
    for context in opened:
        await context.close()


Shoot = Callable[..., Awaitable[Path]]


@pytest.fixture
def shoot(request: pytest.FixtureRequest) -> Shoot:
    """Save a screenshot of a step: test-artifacts/screenshots/<test>-<nn>-<step>.png, the
    whole page; or, given a `name`, just the window under that name (the README's pictures)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    test = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name.removeprefix("test_")).strip("-")
    steps = itertools.count(1)

    async def take(page: Page, step: str, name: str | None = None) -> Path:
        path = SCREENSHOTS / (name or f"{test}-{next(steps):02d}-{step}.png")
        await page.screenshot(path=path, full_page=name is None)
        return path

    return take


@pytest.fixture(scope="session")
def axe_script() -> str:
    """axe-core's browser build, at the pinned version, installed with npm into .cache/axe
    the first time."""
    npm.install(AXE_DIR, {"axe-core": AXE_VERSION})
    return AXE_SCRIPT.read_text(encoding="utf-8")
