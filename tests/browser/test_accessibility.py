"""Every /auth/* page, in every state a patron can meet it, in Dutch and in English, checked by
axe-core in a real browser; a login done with the keyboard alone, focus visible all the way;
a refused form that hands the focus to the field to fix; pages that fit a phone; and the house
style intact under the pages' Content-Security-Policy.

axe runs as a script inside the page, which the pages' CSP (no scripts at all) forbids; only
the axe checks use a browser that ignores the CSP. The other tests here run under the real
policy, so what they see is what a patron sees.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import CLIENT_NAME, PASSWORD, Library, NewContext, Shoot
from tests.browser.patron_pages import CLIENT_LOGIN, PAGES, walk_patron_pages

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

BLOCKING = ("serious", "critical")
FOCUS_RING = {"outline-style": "solid", "outline-width": "3px"}
HOUSE_COLOUR = "rgb(31, 78, 121)"  # the default theme colour, #1f4e79


async def blocking_violations(page: Page, axe_script: str) -> list[str]:
    """axe's serious and critical findings on the page as it is now, one line each."""
    if not await page.evaluate("() => typeof window.axe !== 'undefined'"):
        await page.add_script_tag(content=axe_script)
    results: dict[str, Any] = await page.evaluate(
        "() => axe.run(document, {resultTypes: ['violations']})"
    )
    return [
        f"{rule['impact']} {rule['id']}: {rule['help']} at "
        + ", ".join(" ".join(node["target"]) for node in rule["nodes"])
        for rule in results["violations"]
        if rule["impact"] in BLOCKING
    ]


@pytest.mark.parametrize("lang", ["nl", "en"])
async def test_every_auth_page_has_no_serious_accessibility_problem(
    lang: str, library: Library, new_context: NewContext, axe_script: str, shoot: Shoot
) -> None:
    page = await (await new_context(lang, bypass_csp=True)).new_page()
    found: dict[str, list[str]] = {}

    async def check(name: str) -> None:
        found[name] = await blocking_violations(page, axe_script)
        await shoot(page, name)

    await walk_patron_pages(page, library, lang, check)
    assert sorted(found) == sorted(PAGES)
    assert found == {name: [] for name in PAGES}


async def focus(page: Page) -> dict[str, str]:
    """What has the keyboard focus, and how it is drawn."""
    described: dict[str, str] = await page.evaluate("""() => {
        const el = document.activeElement;
        const style = getComputedStyle(el);
        const box = el.getBoundingClientRect();
        return {
            name: el.id || el.textContent.trim(),
            "outline-style": style.outlineStyle,
            "outline-width": style.outlineWidth,
            "on-screen": String(box.width > 0 && box.height > 0 && box.left >= 0
                                && box.top >= 0 && box.right <= innerWidth),
        };
    }""")
    return described


async def test_a_keyboard_alone_logs_in_with_the_focus_always_in_sight(
    library: Library, new_context: NewContext, shoot: Shoot
) -> None:
    patron = await library.add_patron()
    page = await (await new_context("en")).new_page()
    await page.goto("/reservations/")

    # Everything on the login page, in order, each with the focus ring drawn and on screen.
    stops = []
    for _ in range(7):
        await page.keyboard.press("Tab")
        stops.append(await focus(page))
    await shoot(page, "focus-on-last-link")
    assert [stop["name"] for stop in stops] == [
        "Skip to the content",
        "Nederlands",
        "username",
        "password",
        "Log in",
        "Forgot your password?",
        "Forgot your username?",
    ]
    for stop in stops:
        assert stop == {"name": stop["name"], **FOCUS_RING, "on-screen": "true"}

    # The way a keyboard user logs in: skip the header, type, Tab, type, Enter.
    await page.reload()
    await page.keyboard.press("Tab")
    await shoot(page, "skip-link")
    await page.keyboard.press("Enter")
    await page.keyboard.press("Tab")
    assert (await focus(page))["name"] == "username"
    await page.keyboard.type(patron.username)
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Tab")
    assert (await focus(page))["name"] == "Log in"
    await shoot(page, "focus-on-button")
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(f"{library.url}/reservations/")
    await expect(page.get_by_role("heading", name="My reservations")).to_be_visible()


async def test_the_house_style_survives_the_pages_content_security_policy(
    library: Library, new_context: NewContext
) -> None:
    # The house colour comes from a nonce-tagged <style>, the rest from style.css; if the CSP
    # blocked either, the page would lose the colours axe judged its contrast by.
    page = await (await new_context("nl")).new_page()
    await page.goto("/auth/login")
    header = page.get_by_role("banner")
    await expect(header).to_have_css("background-color", HOUSE_COLOUR)
    await expect(page.get_by_role("button", name="Inloggen")).to_have_css(
        "background-color", HOUSE_COLOUR
    )
    await expect(page.get_by_role("main")).to_have_css("background-color", "rgb(255, 255, 255)")


async def test_a_refused_form_comes_back_with_the_focus_on_what_to_fix(
    library: Library, new_context: NewContext
) -> None:
    patron = await library.add_patron()
    page = await (await new_context("en")).new_page()
    await page.goto("/auth/login?next=/auth/account")
    await page.get_by_label("Username or pass number").fill(patron.username)
    await page.get_by_label("Password", exact=True).fill("not the password")
    await page.keyboard.press("Enter")
    await expect(page).to_have_title("Error: Log in · The Library")
    await expect(page.get_by_label("Username or pass number")).to_be_focused()
    await expect(page.get_by_label("Username or pass number")).to_have_accessible_description(
        "That username or password is not right. Please try again."
    )

    await page.get_by_label("Password", exact=True).fill(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page).to_have_title("Your login details · The Library")
    password_form = page.get_by_role("form", name="Change your password")
    await password_form.get_by_label("Current password").fill(PASSWORD)
    await password_form.get_by_label("New password").fill("short")
    await page.keyboard.press("Enter")
    await expect(page).to_have_title("Error: Your login details · The Library")
    refused = page.get_by_role("form", name="Change your password").get_by_label("New password")
    await expect(refused).to_be_focused()
    await expect(refused).to_have_accessible_description(
        re.compile("The password is too short: use at least 8 characters.")
    )


@pytest.mark.parametrize("lang", ["nl", "en"])
async def test_pages_fit_a_phone_screen_without_sideways_scrolling(
    lang: str, library: Library, new_context: NewContext, shoot: Shoot
) -> None:
    # WCAG reflow: at 320 CSS pixels (a phone, or a desktop zoomed to 400%) nothing may need
    # a horizontal scrollbar, not even the longest e-mail address on the account page.
    patron = await library.add_patron(
        email="a.very.long.address.for.a.patron.of.the.library@reading-rooms.example.org"
    )
    page = await (await new_context(lang, viewport={"width": 320, "height": 640})).new_page()
    for path in ("/auth/login?next=/auth/account", "/auth/forgot-password"):
        await page.goto(path)
        assert await page.evaluate("() => document.documentElement.scrollWidth") <= 320, path
    await page.goto("/auth/login?next=/auth/account")
    await page.locator("#username").fill(patron.username)
    await page.locator("#password").fill(PASSWORD)
    await page.locator("#password").press("Enter")
    await expect(page.get_by_text(patron.email or "")).to_be_visible()
    await shoot(page, "account")
    assert await page.evaluate("() => document.documentElement.scrollWidth") <= 320
    main = await page.get_by_role("main").bounding_box()
    address = await page.get_by_text(patron.email or "").bounding_box()
    assert main is not None and address is not None
    assert address["x"] + address["width"] <= main["x"] + main["width"]


async def test_the_checker_finds_a_field_without_a_label(
    library: Library, new_context: NewContext, axe_script: str
) -> None:
    # Proof that the axe run above can fail: break a label on purpose and axe must see it.
    page = await (await new_context("en", bypass_csp=True)).new_page()
    await page.goto("/auth/login")
    await page.evaluate("() => document.querySelector('label[for=password]').remove()")
    found = await blocking_violations(page, axe_script)
    assert any(" label: " in line and "#password" in line for line in found), found


async def test_the_login_page_opened_from_a_connected_library_wears_its_colours(
    library: Library, new_context: NewContext, axe_script: str, shoot: Shoot
) -> None:
    """A patron sent by a connected library sees that library's name and house colour (from
    clients.yaml; a colour in the request's parameters is ignored), on a page as accessible
    as the library's own."""
    page = await (await new_context("en")).new_page()
    await page.goto(CLIENT_LOGIN)
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Log in to {CLIENT_NAME}")
    await expect(
        page.get_by_text(f"Log in to {CLIENT_NAME} with your library account")
    ).to_be_visible()
    await expect(page.get_by_role("banner")).to_have_css("background-color", "rgb(228, 0, 59)")
    await shoot(page, "client-login", "readme-login-client.png")
    # axe's script needs the CSP out of its way; the colours were judged under it above.
    checked = await (await new_context("en", bypass_csp=True)).new_page()
    await checked.goto(CLIENT_LOGIN)
    await expect(checked.get_by_role("heading", level=1)).to_have_text(f"Log in to {CLIENT_NAME}")
    assert await blocking_violations(checked, axe_script) == []
