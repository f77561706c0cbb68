"""What a patron does, in a real browser: log in once for every service, close the browser,
recover a password from the mail, change their username, activate a new membership, and read
the pages in Dutch or English.

The browsers here run without JavaScript: the gateway's pages must work without it, and a
journey that passes this way passes in any browser that can post a form.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Locator, Page, expect

from gateway.demo.runner import DEMO_EMAIL, DEMO_PASS_NUMBER, DEMO_USERNAME
from tests.browser.conftest import (
    CHROMIUM_ARGS,
    LOCALES,
    PASSWORD,
    PLAYWRIGHT_TIMEOUT_MS,
    VIEWPORT,
    Library,
    NewContext,
    Shoot,
    chromium_executable,
)
from tests.helpers import COOKIE

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

NEW_PASSWORD = "the lamp by the atlas shelf"


async def browser_without_js(new_context: NewContext, lang: str = "en") -> BrowserContext:
    context: BrowserContext = await new_context(lang, java_script_enabled=False)
    return context


async def log_in(page: Page, name: str, password: str) -> None:
    """Fill in and send the English login form the page shows."""
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await page.get_by_label("Username or pass number").fill(name)
    await page.get_by_label("Password", exact=True).fill(password)
    await page.get_by_role("button", name="Log in").click()


def gateway_told(page: Page, header: str) -> Locator:
    """The row of a demo service's "what the gateway told this service" table."""
    return page.get_by_role("row", name=re.compile(f"^{re.escape(header)}\\b"))


async def test_one_login_brings_the_patron_back_and_opens_every_service(
    library: Library, new_context: NewContext, shoot: Shoot
) -> None:
    # The demo's patron, so the README's pictures show what the demo shows.
    patron = await library.add_patron(
        username=DEMO_USERNAME, pass_number=DEMO_PASS_NUMBER, email=DEMO_EMAIL
    )
    page = await (await browser_without_js(new_context)).new_page()

    await page.goto("/reservations/")
    await expect(page).to_have_url(f"{library.url}/auth/login?next=%2Freservations%2F")
    await shoot(page, "login", "readme-login.png")
    await shoot(page, "login")
    await log_in(page, patron.pass_number, PASSWORD)

    await expect(page).to_have_url(f"{library.url}/reservations/")
    await expect(page.get_by_role("heading", name="My reservations")).to_be_visible()
    await expect(gateway_told(page, "X-Library-Pass-Number")).to_contain_text(patron.pass_number)
    await shoot(page, "reservations")

    await page.get_by_role("link", name="Catalogue", exact=True).click()
    await expect(page).to_have_url(f"{library.url}/catalogue/")
    await expect(page.get_by_text(f"Welcome back, {patron.username}.")).to_be_visible()
    await shoot(page, "catalogue")

    await page.get_by_role("link", name="Digital library", exact=True).click()
    await page.get_by_role("link", name="Max Havelaar").click()
    await expect(page).to_have_url(f"{library.url}/digital/read/max-havelaar")
    await expect(page.get_by_role("heading", name="Max Havelaar")).to_be_visible()
    await expect(gateway_told(page, "X-Library-Username")).to_contain_text(patron.username)
    await shoot(page, "digital")

    # The services' own link to the patron's login details.
    await page.get_by_role("link", name=patron.username).click()
    await expect(page).to_have_url(f"{library.url}/auth/account")
    await expect(page.get_by_role("heading", name="Your login details")).to_be_visible()
    await shoot(page, "account", "readme-account.png")
    await shoot(page, "account")


async def test_closing_the_browser_ends_the_login(
    library: Library, browser: Browser, tmp_path: Path, shoot: Shoot
) -> None:
    """One browser profile, as a patron's own browser keeps it on disk: log in, close the
    browser (its process ends), start it again on the same profile. The login cookie, kept
    for the browser session only, is gone, and the patron is asked to log in again; a cookie
    meant to outlast the browser, set beside it, is still there, so it was the same profile
    and not just a fresh one."""
    patron = await library.add_patron()
    profile = tmp_path / "profile"

    async def start_the_browser() -> BrowserContext:
        context = await browser.browser_type.launch_persistent_context(
            profile,
            executable_path=chromium_executable(),
            args=CHROMIUM_ARGS,
            base_url=library.url,
            locale=LOCALES["en"],
            viewport=VIEWPORT,
            java_script_enabled=False,
        )
        context.set_default_timeout(PLAYWRIGHT_TIMEOUT_MS)
        return context

    first = await start_the_browser()
    try:
        page = await first.new_page()
        await page.goto("/reservations/")
        await log_in(page, patron.username, PASSWORD)
        await expect(page.get_by_role("heading", name="My reservations")).to_be_visible()
        [cookie] = [c for c in await first.cookies() if c["name"] == COOKIE]
        assert cookie["expires"] == -1  # no Expires, no Max-Age: a browser-session cookie
        await first.add_cookies(
            [
                {
                    "name": "outlasts_the_browser",
                    "value": "yes",
                    "url": library.url,
                    "expires": time.time() + 24 * 3600,
                }
            ]
        )
    finally:
        await first.close()

    again = await start_the_browser()
    try:
        kept = {c["name"] for c in await again.cookies()}
        assert "outlasts_the_browser" in kept
        assert COOKIE not in kept
        page = await again.new_page()
        await page.goto("/reservations/")
        await expect(page).to_have_url(f"{library.url}/auth/login?next=%2Freservations%2F")
        await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
        await shoot(page, "login-again")
    finally:
        await again.close()


async def test_a_forgotten_password_is_replaced_through_the_mailed_link(
    library: Library, new_context: NewContext, shoot: Shoot
) -> None:
    patron = await library.add_patron()
    assert patron.email is not None
    page = await (await browser_without_js(new_context)).new_page()
    await page.goto("/reservations/")
    await page.get_by_role("link", name="Forgot your password?").click()
    await expect(page.get_by_role("heading", name="Forgot your password?")).to_be_visible()
    await page.get_by_label("Username, pass number or e-mail address").fill(patron.username)
    await shoot(page, "forgot-password")
    await page.get_by_role("button", name="Send me a link").click()
    await expect(page.get_by_role("status")).to_contain_text("a mail with a link is on its way")
    await shoot(page, "link-sent")

    link = await library.mailed_link(patron.email, "reset", "en")
    await page.goto(library.path(link))
    await expect(page.get_by_role("heading", name="Choose a new password")).to_be_visible()
    await page.get_by_label("New password").fill(NEW_PASSWORD)
    await shoot(page, "new-password")
    await page.get_by_role("button", name="Save new password").click()

    # The way back to the reservations survived the detour through the mail.
    await expect(page).to_have_url(f"{library.url}/auth/login?notice=reset&next=/reservations/")
    await expect(page.get_by_role("status")).to_have_text(
        "Your password has been changed. You can log in with it now."
    )
    await shoot(page, "password-changed")
    await log_in(page, patron.username, PASSWORD)
    await expect(page.get_by_role("alert")).to_have_text(
        "That username or password is not right. Please try again."
    )
    await log_in(page, patron.username, NEW_PASSWORD)
    await expect(page).to_have_url(f"{library.url}/reservations/")
    await expect(page.get_by_role("heading", name="My reservations")).to_be_visible()

    # The link worked once.
    await page.goto(library.path(link))
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        "This link does not work any more"
    )


async def test_a_new_username_is_the_one_to_log_in_with(
    library: Library, new_context: NewContext, shoot: Shoot
) -> None:
    patron = await library.add_patron(username="first.choice")
    new_username = "second.thoughts"
    page = await (await browser_without_js(new_context)).new_page()
    await page.goto("/auth/account")
    await log_in(page, patron.username, PASSWORD)
    await expect(page.get_by_role("heading", name="Your login details")).to_be_visible()

    form = page.get_by_role("form", name="Change your username")
    await form.get_by_label("New username").fill(new_username)
    await form.get_by_label("Current password").fill(PASSWORD)
    await shoot(page, "change-username")
    await form.get_by_role("button", name="Change username").click()
    await expect(page.get_by_role("status")).to_have_text("Your username has been changed.")
    await expect(page.get_by_role("definition").first).to_have_text(new_username)
    await shoot(page, "username-changed")

    await page.get_by_role("button", name="Log out").click()
    await expect(page).to_have_url(f"{library.url}/auth/login")
    await shoot(page, "logged-out")
    await log_in(page, patron.username, PASSWORD)
    await expect(page.get_by_role("alert")).to_contain_text("not right")
    await page.goto("/reservations/")
    await log_in(page, new_username, PASSWORD)
    await expect(page).to_have_url(f"{library.url}/reservations/")
    await expect(gateway_told(page, "X-Library-Username")).to_contain_text(new_username)


async def test_a_new_member_activates_with_a_username_of_their_own(
    library: Library, new_context: NewContext, shoot: Shoot
) -> None:
    member = await library.add_patron(password=None)
    assert member.email is not None
    link = await library.invite(member.pass_number, member.email, "en")
    page = await (await browser_without_js(new_context)).new_page()

    await page.goto(library.path(link))
    await expect(page.get_by_role("heading", name="Activate your account")).to_be_visible()
    username = page.get_by_label("Username")
    await expect(username).to_have_value(member.pass_number)  # the pass number, unless changed
    chosen = f"new.member.{member.pass_number[-6:]}"
    await username.fill(chosen)
    await page.get_by_label("Password").fill(NEW_PASSWORD)
    await shoot(page, "activate")
    await page.get_by_role("button", name="Activate my account").click()

    await expect(page.get_by_role("status")).to_have_text(
        "Your account is ready. You can log in now."
    )
    await shoot(page, "activated")
    await page.goto("/auth/account")
    await log_in(page, chosen, NEW_PASSWORD)
    await expect(page).to_have_url(f"{library.url}/auth/account")
    await expect(page.get_by_role("definition").nth(1)).to_have_text(member.pass_number)
    await expect(page.get_by_role("definition").first).to_have_text(chosen)
    await shoot(page, "account")


async def test_the_login_page_speaks_dutch_and_english(
    library: Library, new_context: NewContext, shoot: Shoot
) -> None:
    patron = await library.add_patron()
    page = await (await browser_without_js(new_context, "nl")).new_page()
    await page.goto("/reservations/")
    await expect(page.locator("html")).to_have_attribute("lang", "nl")
    await expect(page.get_by_role("heading", name="Inloggen")).to_be_visible()
    await expect(page.get_by_label("Gebruikersnaam of pasnummer")).to_be_visible()
    await expect(page.get_by_label("Wachtwoord", exact=True)).to_be_visible()
    await expect(page.get_by_role("button", name="Inloggen")).to_be_visible()
    await expect(page.get_by_role("link", name="Wachtwoord vergeten?")).to_be_visible()
    await expect(page.get_by_text("Log in", exact=True)).to_have_count(0)
    await shoot(page, "dutch")

    await page.get_by_role("link", name="English").click()
    await expect(page.locator("html")).to_have_attribute("lang", "en")
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await expect(page.get_by_role("link", name="Forgot your password?")).to_be_visible()
    await expect(page.get_by_text("Inloggen", exact=True)).to_have_count(0)
    await shoot(page, "english")

    # The choice is remembered on the next page, and the way back is kept through it.
    await page.get_by_role("link", name="Forgot your username?").click()
    await expect(page.get_by_role("heading", name="Forgot your username?")).to_be_visible()
    await page.go_back()
    await log_in(page, patron.username, PASSWORD)
    await expect(page).to_have_url(f"{library.url}/reservations/")

    # An English browser gets English first, and can switch to Dutch.
    page = await (await browser_without_js(new_context, "en")).new_page()
    await page.goto("/auth/login")
    await expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    await page.get_by_role("link", name="Nederlands").click()
    await expect(page.get_by_role("heading", name="Inloggen")).to_be_visible()
    await expect(page.get_by_role("navigation", name="Taal")).to_contain_text("English")
