"""Where a patron is logged in, in a real browser: two browsers of one patron, one of them
also logged in at a connected library; the first sees both on its account page, ends the
other, and the other is at the login page at its next click.

Browser B runs without JavaScript, like the journeys in test_patron_journeys.py; browser A
ignores the pages' CSP, because axe checks the account page from inside it.
"""

from __future__ import annotations

import re
from urllib.parse import urlencode

import pytest
from playwright.async_api import Page, Route, expect

from tests.browser.conftest import (
    CLIENT_NAME,
    CLIENT_REDIRECT,
    PASSWORD,
    Library,
    NewContext,
    Shoot,
)
from tests.browser.test_accessibility import blocking_violations

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

# What each browser says it is, so the list has something a patron recognises to show.
LAPTOP = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Safari/537.36"
)
DESKTOP = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:125.0) Gecko/20100101 Firefox/125.0"
AUTHORIZE = "/auth/oidc/authorize?" + urlencode(
    {
        "response_type": "code",
        "client_id": "online-library",
        "redirect_uri": CLIENT_REDIRECT,
        "scope": "openid profile",
        "state": "s",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
)


async def log_in(page: Page, name: str) -> None:
    """Fill in and send the English login form the page shows."""
    await page.get_by_label("Username or pass number").fill(name)
    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.get_by_role("button", name="Log in").click()


async def the_library_site(route: Route) -> None:
    """The connected library's own site, where its callback lands (never on the network)."""
    await route.fulfill(
        status=200, content_type="text/html", body="<!doctype html><title>Online</title>"
    )


async def test_a_patron_ends_their_session_in_another_browser(
    library: Library, new_context: NewContext, axe_script: str, shoot: Shoot
) -> None:
    patron = await library.add_patron()

    # Browser B: logs in at the connected library, then uses the reservations.
    other = await new_context("en", java_script_enabled=False, user_agent=DESKTOP)
    await other.route(f"{CLIENT_REDIRECT}**", the_library_site)
    page_b = await other.new_page()
    await page_b.goto(AUTHORIZE)
    await expect(page_b.get_by_role("heading", level=1)).to_have_text(f"Log in to {CLIENT_NAME}")
    await log_in(page_b, patron.username)
    await expect(page_b).to_have_url(re.compile(re.escape(CLIENT_REDIRECT + "?code=")))
    await page_b.goto("/reservations/")
    await expect(page_b.get_by_role("heading", name="My reservations")).to_be_visible()

    # Browser A: the account page lists both, this one marked.
    page_a = await (await new_context("en", bypass_csp=True, user_agent=LAPTOP)).new_page()
    await page_a.goto("/auth/account")
    await log_in(page_a, patron.username)
    await expect(page_a).to_have_url(f"{library.url}/auth/account")
    sessions = page_a.get_by_role("list", name="Where you are logged in")
    await expect(sessions.get_by_role("listitem")).to_have_count(2)
    this = sessions.get_by_role("listitem").filter(has_text="this browser")
    there = sessions.get_by_role("listitem").filter(has_text="Firefox 125 on Windows")
    await expect(this).to_have_count(1)
    await expect(this).to_contain_text("Chrome 124 on Linux")
    await expect(this.get_by_role("button")).to_have_count(0)
    await expect(there).to_contain_text("Also logged in at")
    await expect(there.get_by_role("definition").last).to_have_text(CLIENT_NAME)
    assert await blocking_violations(page_a, axe_script) == []
    await page_a.locator("#sessions-heading").evaluate("heading => heading.scrollIntoView()")
    await shoot(page_a, "sessions", "readme-account-sessions.png")
    await shoot(page_a, "sessions")

    # A ends B's session: B's very next click finds it logged out.
    await there.get_by_role("button", name="Log out there").click()
    await expect(page_a.get_by_role("status")).to_have_text("That browser has been logged out.")
    await expect(sessions.get_by_role("listitem")).to_have_count(1)
    await expect(page_a.get_by_role("button", name="Log out everywhere else")).to_have_count(0)
    assert await blocking_violations(page_a, axe_script) == []
    await shoot(page_a, "ended")

    await page_b.get_by_role("link", name="My reservations").click()
    await expect(page_b).to_have_url(f"{library.url}/auth/login?next=%2Freservations%2F")
    await expect(page_b.get_by_role("heading", name="Log in")).to_be_visible()
    await shoot(page_b, "logged-out")

    # A is still logged in.
    await page_a.goto("/reservations/")
    await expect(page_a.get_by_role("heading", name="My reservations")).to_be_visible()
