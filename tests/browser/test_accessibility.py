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
from urllib.parse import urlencode

import pytest
from playwright.async_api import Locator, Page, expect

from auth.pages import i18n
from tests.browser.conftest import (
    CLIENT_NAME,
    CLIENT_REDIRECT,
    PASSWORD,
    Library,
    NewContext,
    Shoot,
)

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


async def submit(page: Page, button: Locator) -> int:
    """Press a form's button and return the HTTP status of the page it leads to (after
    redirects)."""
    async with page.expect_navigation() as navigation:
        await button.click()
    response = await navigation.value
    assert response is not None
    return response.status


# Every state of every /auth/* page a patron can meet, with the HTTP status it comes with.
PAGES = {
    "login": 200,
    "login-failed": 401,
    "account": 200,
    "account-username-refused": 422,
    "account-password-refused": 403,
    "account-link-refused": 403,
    "logout": 200,
    "logged-out": 200,
    "forgot-password": 200,
    "forgot-password-refused": 422,
    "forgot-password-sent": 200,
    "forgot-username": 200,
    "forgot-username-sent": 200,
    "reset-password": 200,
    "reset-password-refused": 422,
    "activate": 200,
    "activate-refused": 422,
    "dead-link": 410,
    "form-expired": 403,
    "not-found": 404,
}


async def visit(page: Page, path: str) -> int:
    response = await page.goto(path)
    assert response is not None
    return response.status


@pytest.mark.parametrize("lang", ["nl", "en"])
async def test_every_auth_page_has_no_serious_accessibility_problem(
    lang: str, library: Library, new_context: NewContext, axe_script: str, shoot: Shoot
) -> None:
    t = i18n.translator(lang)
    patron = await library.add_patron()
    member = await library.add_patron(password=None)
    links = library.services.links
    page = await (await new_context(lang, bypass_csp=True)).new_page()
    found: dict[str, list[str]] = {}

    async def check(name: str, heading: str, status: int) -> None:
        """axe the page, after making sure it is the page meant."""
        assert status == PAGES[name], f"{name}: HTTP {status}"
        await expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        await expect(page.locator("html")).to_have_attribute("lang", lang)
        found[name] = await blocking_violations(page, axe_script)
        await shoot(page, name)

    login_button = page.get_by_role("button", name=t["login.submit"])
    await check("login", t["login.title"], await visit(page, "/auth/login?next=/auth/account"))
    await page.get_by_label(t["login.username"]).fill(patron.username)
    await page.get_by_label(t["login.password"], exact=True).fill("not the password")
    await check("login-failed", t["login.title"], await submit(page, login_button))
    await page.get_by_label(t["login.password"], exact=True).fill(PASSWORD)
    await check("account", t["account.title"], await submit(page, login_button))

    username_form = page.get_by_role("form", name=t["account.change_username"])
    await username_form.get_by_label(t["account.new_username"]).fill("two words")
    await username_form.get_by_label(t["account.current_password"]).fill(PASSWORD)
    await check(
        "account-username-refused",
        t["account.title"],
        await submit(page, username_form.get_by_role("button", name=t["account.save_username"])),
    )
    password_form = page.get_by_role("form", name=t["account.change_password"])
    await password_form.get_by_label(t["account.current_password"]).fill("not the password")
    await password_form.get_by_label(t["account.new_password"]).fill("a fine new password")
    await check(
        "account-password-refused",
        t["account.title"],
        await submit(page, password_form.get_by_role("button", name=t["account.save_password"])),
    )
    link_form = page.get_by_role("form", name=t["passes.link_title"])
    await link_form.get_by_label(t["passes.link_pass_number"]).fill("no such pass")
    await link_form.get_by_label(t["passes.link_password"]).fill("not the password")
    await check(
        "account-link-refused",
        t["account.title"],
        await submit(page, link_form.get_by_role("button", name=t["passes.link_save"])),
    )

    await check("logout", t["logout.title"], await visit(page, "/auth/logout"))
    await check(
        "logged-out",
        t["login.title"],
        await submit(page, page.get_by_role("button", name=t["logout.submit"])),
    )
    await expect(page.get_by_role("status")).to_have_text(t["login.notice.logged_out"])

    await check("forgot-password", t["forgot.title"], await visit(page, "/auth/forgot-password"))
    send_link = page.get_by_role("button", name=t["forgot.submit"])
    await check("forgot-password-refused", t["forgot.title"], await submit(page, send_link))
    await page.get_by_label(t["forgot.identifier"]).fill(patron.username)
    await check("forgot-password-sent", t["forgot.title"], await submit(page, send_link))

    await check(
        "forgot-username", t["forgot_username.title"], await visit(page, "/auth/forgot-username")
    )
    await page.get_by_label(t["forgot_username.email"]).fill("nobody@example.org")
    await check(
        "forgot-username-sent",
        t["forgot_username.title"],
        await submit(page, page.get_by_role("button", name=t["forgot_username.submit"])),
    )

    token = await links.issue(patron.id, "reset", 600)
    await check(
        "reset-password", t["reset.title"], await visit(page, f"/auth/reset-password?token={token}")
    )
    await page.get_by_label(t["account.new_password"]).fill("short")
    await check(
        "reset-password-refused",
        t["reset.title"],
        await submit(page, page.get_by_role("button", name=t["reset.submit"])),
    )

    token = await links.issue(member.id, "activate", 600)
    await check("activate", t["activate.title"], await visit(page, f"/auth/activate?token={token}"))
    await page.get_by_label(t["activate.username"]).fill("two words")
    await page.get_by_label(t["activate.password"]).fill("a fine new password")
    await check(
        "activate-refused",
        t["activate.title"],
        await submit(page, page.get_by_role("button", name=t["activate.submit"])),
    )

    await check(
        "dead-link",
        t["activate.invalid.title"],
        await visit(page, "/auth/activate?token=used-up-or-never-issued"),
    )

    # A form whose session has gone (the browser was closed and reopened in between).
    await visit(page, "/auth/forgot-username")
    await page.context.clear_cookies()
    await page.get_by_label(t["forgot_username.email"]).fill("nobody@example.org")
    await check(
        "form-expired",
        t["csrf.title"],
        await submit(page, page.get_by_role("button", name=t["forgot_username.submit"])),
    )

    # The gateway's own error page, for a wrong address under /auth/.
    await check("not-found", t["gateway_error.not_found.title"], await visit(page, "/auth/nothing"))

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
    query = urlencode(
        {
            "response_type": "code",
            "client_id": "online-library",
            "redirect_uri": CLIENT_REDIRECT,
            "scope": "openid profile",
            "state": "s",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
            "colour": "#000000",
        }
    )
    await page.goto(f"/auth/oidc/authorize?{query}")
    await expect(page.get_by_role("heading", level=1)).to_have_text(f"Log in to {CLIENT_NAME}")
    await expect(
        page.get_by_text(f"Log in to {CLIENT_NAME} with your library account")
    ).to_be_visible()
    await expect(page.get_by_role("banner")).to_have_css("background-color", "rgb(228, 0, 59)")
    await shoot(page, "client-login", "readme-login-client.png")
    # axe's script needs the CSP out of its way; the colours were judged under it above.
    checked = await (await new_context("en", bypass_csp=True)).new_page()
    await checked.goto(f"/auth/oidc/authorize?{query}")
    await expect(checked.get_by_role("heading", level=1)).to_have_text(f"Log in to {CLIENT_NAME}")
    assert await blocking_violations(checked, axe_script) == []
