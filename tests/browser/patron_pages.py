"""Every state of every /auth/* page a patron can meet, walked once in a real browser.

The walk is written once and run by each check that judges pages: the accessibility test runs
axe at every stop, the console test reads what Chromium said while the page loaded. At each
stop the walk first makes sure it is on the page meant (its HTTP status, its heading, its
language), then hands the stop's name to the check.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from playwright.async_api import Locator, Page, expect

from auth.pages import i18n
from tests.browser.conftest import (
    CLIENT_NAME,
    CLIENT_REDIRECT,
    PARTNER_ID,
    PARTNER_REDIRECT,
    PASSWORD,
    Library,
)

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

# The login page as the connected library (conftest's CLIENTS) sends its patrons to it; the
# colour in the parameters is one the page must ignore.
CLIENT_LOGIN = "/auth/oidc/authorize?" + urlencode(
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
CLIENT_LOGIN_TITLE = f"Log in to {CLIENT_NAME}"
# The same from another organisation's site: a patron already logged in is asked whether to
# share their details with it.
PARTNER_AUTHORIZE = "/auth/oidc/authorize?" + urlencode(
    {
        "response_type": "code",
        "client_id": PARTNER_ID,
        "redirect_uri": PARTNER_REDIRECT,
        "scope": "openid profile",
        "state": "s",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
)

Check = Callable[[str], Awaitable[None]]


async def visit(page: Page, path: str) -> int:
    response = await page.goto(path)
    assert response is not None
    return response.status


async def submit(page: Page, button: Locator) -> int:
    """Press a form's button and return the HTTP status of the page it leads to (after
    redirects)."""
    async with page.expect_navigation() as navigation:
        await button.click()
    response = await navigation.value
    assert response is not None
    return response.status


async def walk_patron_pages(page: Page, library: Library, lang: str, check: Check) -> None:
    """Take `page` (a fresh context in `lang`) through every state in PAGES, in that order,
    calling `check` with the state's name at each."""
    t = i18n.translator(lang)
    patron = await library.add_patron()
    member = await library.add_patron(password=None)
    links = library.services.links

    async def at(name: str, heading: str, status: int) -> None:
        assert status == PAGES[name], f"{name}: HTTP {status}"
        await expect(page.get_by_role("heading", level=1)).to_have_text(heading)
        await expect(page.locator("html")).to_have_attribute("lang", lang)
        await check(name)

    login_button = page.get_by_role("button", name=t["login.submit"])
    await at("login", t["login.title"], await visit(page, "/auth/login?next=/auth/account"))
    await page.get_by_label(t["login.username"]).fill(patron.username)
    await page.get_by_label(t["login.password"], exact=True).fill("not the password")
    await at("login-failed", t["login.title"], await submit(page, login_button))
    await page.get_by_label(t["login.password"], exact=True).fill(PASSWORD)
    await at("account", t["account.title"], await submit(page, login_button))

    username_form = page.get_by_role("form", name=t["account.change_username"])
    await username_form.get_by_label(t["account.new_username"]).fill("two words")
    await username_form.get_by_label(t["account.current_password"]).fill(PASSWORD)
    await at(
        "account-username-refused",
        t["account.title"],
        await submit(page, username_form.get_by_role("button", name=t["account.save_username"])),
    )
    password_form = page.get_by_role("form", name=t["account.change_password"])
    await password_form.get_by_label(t["account.current_password"]).fill("not the password")
    await password_form.get_by_label(t["account.new_password"]).fill("a fine new password")
    await at(
        "account-password-refused",
        t["account.title"],
        await submit(page, password_form.get_by_role("button", name=t["account.save_password"])),
    )
    link_form = page.get_by_role("form", name=t["passes.link_title"])
    await link_form.get_by_label(t["passes.link_pass_number"]).fill("no such pass")
    await link_form.get_by_label(t["passes.link_password"]).fill("not the password")
    await at(
        "account-link-refused",
        t["account.title"],
        await submit(page, link_form.get_by_role("button", name=t["passes.link_save"])),
    )

    await at("logout", t["logout.title"], await visit(page, "/auth/logout"))
    await at(
        "logged-out",
        t["login.title"],
        await submit(page, page.get_by_role("button", name=t["logout.submit"])),
    )
    await expect(page.get_by_role("status")).to_have_text(t["login.notice.logged_out"])

    await at("forgot-password", t["forgot.title"], await visit(page, "/auth/forgot-password"))
    send_link = page.get_by_role("button", name=t["forgot.submit"])
    await at("forgot-password-refused", t["forgot.title"], await submit(page, send_link))
    await page.get_by_label(t["forgot.identifier"]).fill(patron.username)
    await at("forgot-password-sent", t["forgot.title"], await submit(page, send_link))

    await at(
        "forgot-username", t["forgot_username.title"], await visit(page, "/auth/forgot-username")
    )
    await page.get_by_label(t["forgot_username.email"]).fill("nobody@example.org")
    await at(
        "forgot-username-sent",
        t["forgot_username.title"],
        await submit(page, page.get_by_role("button", name=t["forgot_username.submit"])),
    )

    token = await links.issue(patron.id, "reset", 600)
    await at(
        "reset-password", t["reset.title"], await visit(page, f"/auth/reset-password?token={token}")
    )
    await page.get_by_label(t["account.new_password"]).fill("short")
    await at(
        "reset-password-refused",
        t["reset.title"],
        await submit(page, page.get_by_role("button", name=t["reset.submit"])),
    )

    token = await links.issue(member.id, "activate", 600)
    await at("activate", t["activate.title"], await visit(page, f"/auth/activate?token={token}"))
    await page.get_by_label(t["activate.username"]).fill("two words")
    await page.get_by_label(t["activate.password"]).fill("a fine new password")
    await at(
        "activate-refused",
        t["activate.title"],
        await submit(page, page.get_by_role("button", name=t["activate.submit"])),
    )

    await at(
        "dead-link",
        t["activate.invalid.title"],
        await visit(page, "/auth/activate?token=used-up-or-never-issued"),
    )

    # A form whose session has gone (the browser was closed and reopened in between).
    await visit(page, "/auth/forgot-username")
    await page.context.clear_cookies()
    await page.get_by_label(t["forgot_username.email"]).fill("nobody@example.org")
    await at(
        "form-expired",
        t["csrf.title"],
        await submit(page, page.get_by_role("button", name=t["forgot_username.submit"])),
    )

    # The gateway's own error page, for a wrong address under /auth/.
    await at("not-found", t["gateway_error.not_found.title"], await visit(page, "/auth/nothing"))
