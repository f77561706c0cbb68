"""The staff console in a real Chromium: a new admin activates their account from the mail,
enrols an authenticator app (the code computed from the secret the page shows, as a phone
would) and signs in with it; another enrols a passkey with Chromium's virtual authenticator
(DevTools' WebAuthn domain) and signs in with it, under the console's real
Content-Security-Policy; and every console page, in Dutch and English, checked by axe.

WebAuthn needs a secure context and an RP ID that is a domain name: the passkey journey runs
on its own gateway whose public URL is http://localhost:PORT (browsers treat localhost as
secure).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio
from aiohttp import web
from cryptography.fernet import Fernet, MultiFernet
from playwright.async_api import Browser, Page, expect

from auth.credentials.passwords import PasswordHasher
from auth.mail import SmtpTransport
from auth.pages import i18n
from auth.staff.services import STAFF_SERVICES
from gateway.app import create_app
from gateway.config.reload import RouteMap
from gateway.config.routes_file import parse_routes
from gateway.config.settings import Settings
from gateway.demo.mailcatcher import MailCatcher
from gateway.server.runner import GatewayRunner
from tests.browser.conftest import (
    LOCALES,
    PLAYWRIGHT_TIMEOUT_MS,
    VIEWPORT,
    Library,
    NewContext,
    Shoot,
    _listening_socket,
    _serve,
)
from tests.browser.staff_pages import (
    STAFF_PAGES,
    STAFF_PASSWORD,
    invite,
    sign_in_password,
    sign_out,
    walk_staff_console,
)
from tests.browser.test_accessibility import blocking_violations
from tests.helpers import FAST_ARGON2

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]


def local(url: str, link: str) -> str:
    assert link.startswith(url + "/"), link
    return link[len(url) :]


async def choose_password(page: Page, t: dict[str, str], path: str) -> None:
    await page.goto(path)
    await expect(page.get_by_role("heading", level=1)).to_have_text(t["staff.activate.title"])
    await page.get_by_label(t["staff.activate.password"], exact=True).fill(STAFF_PASSWORD)
    await page.get_by_role("button", name=t["staff.activate.submit"]).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(t["staff.security.title"])


@pytest.mark.timeout(240)
@pytest.mark.parametrize("lang", ["nl", "en"])
async def test_a_new_admin_enrols_an_authenticator_app_and_signs_in_with_it(
    lang: str,
    library: Library,
    new_context: NewContext,
    axe_script: str,
    shoot: Shoot,
) -> None:
    # axe's script needs the CSP out of its way; the pages need no script of their own.
    page = await (await new_context(lang, bypass_csp=True)).new_page()
    found: dict[str, list[str]] = {}

    async def check(name: str) -> None:
        found[name] = await blocking_violations(page, axe_script)
        await shoot(page, name)

    await walk_staff_console(page, library, lang, check)
    assert list(found) == list(STAFF_PAGES)
    assert found == {name: [] for name in found}, found


# --- passkeys, on a gateway at http://localhost ------------------------------------------


@dataclass
class Localhost:
    url: str
    app: web.Application
    catcher: MailCatcher


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def localhost(
    library: Library, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Localhost]:
    """A second gateway on the same database, at http://localhost:PORT. Its mail goes to the
    library's catcher: the two share one outbox, and either's worker may send a mail."""
    hasher = PasswordHasher(max_workers=2, **FAST_ARGON2)
    sock = _listening_socket()
    port = sock.getsockname()[1]
    url = f"http://localhost:{port}"
    settings = Settings.from_env(
        {"GATEWAY_PUBLIC_URL": url},
        host="127.0.0.1",
        port=port,
        data_dir=tmp_path_factory.mktemp("localhost"),
    )
    routes = (
        "routes:\n  - name: open\n    prefix: /open\n"
        "    backend: http://127.0.0.1:9\n    auth: public\n"
    )
    app = create_app(
        settings,
        RouteMap(parse_routes(routes, "routes.yaml")),
        database_url=database_url,
        cookie_keys=MultiFernet([Fernet(Fernet.generate_key())]),
        hasher=hasher,
        mail_transport=SmtpTransport(library.catcher.url),
    )
    runner = await _serve(app, sock, GatewayRunner)
    try:
        yield Localhost(url, app, library.catcher)
    finally:
        await runner.cleanup()
        hasher.close()


@pytest.mark.timeout(240)
async def test_a_passkey_is_enrolled_and_signs_in_with_chromiums_virtual_authenticator(
    browser: Browser, localhost: Localhost, shoot: Shoot
) -> None:
    t = dict(i18n.translator("en"))
    email = f"passkey-{time.time_ns()}@library.example.org"
    link = await invite(localhost.app, localhost.catcher, email, "helpdesk", "en")
    # The console's own Content-Security-Policy stays on: its script must run under it.
    context = await browser.new_context(
        base_url=localhost.url, locale=LOCALES["en"], viewport=VIEWPORT
    )
    context.set_default_timeout(PLAYWRIGHT_TIMEOUT_MS)
    try:
        page = await context.new_page()
        blocked: list[str] = []
        page.on(
            "console",
            lambda message: (
                blocked.append(message.text) if "Content Security Policy" in message.text else None
            ),
        )
        cdp = await context.new_cdp_session(page)
        await cdp.send("WebAuthn.enable")
        added = await cdp.send(
            "WebAuthn.addVirtualAuthenticator",
            {
                "options": {
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": True,
                    "hasUserVerification": True,
                    "isUserVerified": True,
                    "automaticPresenceSimulation": True,
                }
            },
        )
        await choose_password(page, t, local(localhost.url, link))
        await page.get_by_role("link", name=t["staff.enrol.choose_passkey"]).click()
        await expect(page.get_by_role("heading", level=1)).to_have_text(
            t["staff.enrol.passkey_title"]
        )
        await shoot(page, "passkey-enrol")
        await page.get_by_label(t["staff.enrol.name"]).fill("Office laptop")
        await page.get_by_role("button", name=t["staff.enrol.passkey_submit"]).click()
        await expect(page.get_by_role("heading", level=1)).to_have_text(t["staff.codes.title"])
        await page.get_by_role("link", name=t["staff.codes.continue"]).click()
        await expect(page.get_by_role("heading", level=1)).to_have_text(t["staff.home.title"])
        # The house style arrived under the policy too.
        await expect(page.get_by_role("banner")).to_have_css("background-color", "rgb(31, 78, 121)")

        await sign_out(page, t)
        await sign_in_password(page, t, email)
        # Only the ways this member has: a passkey and recovery codes, no app.
        await expect(page.get_by_label(t["staff.factor.code"], exact=True)).to_have_count(0)
        await shoot(page, "passkey-sign-in")
        await page.get_by_role("button", name=t["staff.factor.passkey_submit"]).click()
        await expect(page.get_by_role("heading", level=1)).to_have_text(t["staff.home.title"])
        await expect(page.get_by_text(email)).to_be_visible()

        services = localhost.app[STAFF_SERVICES]
        member = await services.members.by_email(email)
        assert member is not None and member.activated_at is not None
        [key] = await services.factors.passkeys_of(member.id)
        assert key.transports == ("internal",)
        held = await cdp.send(
            "WebAuthn.getCredentials", {"authenticatorId": added["authenticatorId"]}
        )
        [credential] = held["credentials"]
        assert credential["rpId"] == "localhost"
        assert blocked == []
    finally:
        await context.close()
