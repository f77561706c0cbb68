"""The staff console's pages, walked once in a real browser as a new admin meets them: the
activation link from the mail, the choice of a second factor, an authenticator app's
enrolment, the recovery codes, every page of the console's menu, signing out and in again.

Like the patrons' walk (tests/browser/patron_pages.py), it makes sure each stop is the page
meant and hands the stop's name to the check that judges it: axe in the console's own test,
Chromium's complaints in the console test.
"""

from __future__ import annotations

import time

from aiohttp import web
from playwright.async_api import Page, expect

from auth.audit import NO_ORIGIN, Actor
from auth.pages import i18n
from auth.staff import totp
from auth.staff.services import STAFF_SERVICES
from gateway.demo.mailcatcher import MailCatcher
from tests.browser.conftest import Library
from tests.browser.patron_pages import Check
from tests.helpers import link_in, mail_for

STAFF_PASSWORD = "the index cards in the basement"
OPERATOR = Actor("operator", "test")

# The stops of `walk_staff_console`, in order.
STAFF_PAGES = (
    "activate",
    "activate-refused",
    "enrol-choice",
    "totp",
    "totp-refused",
    "recovery-codes",
    "home",
    "members",
    "audit",
    "security",
    "login",
    "login-failed",
    "second-step",
    "second-step-failed",
)


async def invite(
    app: web.Application, catcher: MailCatcher, email: str, role: str, lang: str
) -> str:
    """Add a staff member as `library-gateway staff add` does; the link their mail carries."""
    await app[STAFF_SERVICES].management.invite(
        email, role, actor=OPERATOR, origin=NO_ORIGIN, lang=lang
    )
    return link_in(await mail_for(catcher, email, "staff_activate", lang))


async def sign_in_password(page: Page, t: dict[str, str], email: str) -> None:
    await page.goto("/staff/login")
    await page.get_by_label(t["staff.login.email"]).fill(email)
    await page.get_by_label(t["staff.login.password"], exact=True).fill(STAFF_PASSWORD)
    await page.get_by_role("button", name=t["staff.login.submit"]).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(t["staff.factor.title"])


async def sign_out(page: Page, t: dict[str, str]) -> None:
    await page.get_by_role("button", name=t["staff.sign_out"]).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(t["staff.login.title"])


async def walk_staff_console(page: Page, library: Library, lang: str, check: Check) -> str:
    """A new admin, invited in `lang`, takes `page` through every stop in STAFF_PAGES and ends
    signed in on the console's home page; returns the admin's e-mail address."""
    t = dict(i18n.translator(lang))
    email = f"admin-{lang}-{time.time_ns()}@library.example.org"
    link = await invite(library.app, library.catcher, email, "admin", lang)

    async def at(name: str) -> None:
        await expect(page.locator("html")).to_have_attribute("lang", lang)
        await check(name)

    await page.goto(library.path(link))
    await at("activate")
    await page.get_by_label(t["staff.activate.password"], exact=True).fill("password")
    await page.get_by_role("button", name=t["staff.activate.submit"]).click()
    await expect(page.get_by_label(t["staff.activate.password"], exact=True)).to_be_focused()
    await at("activate-refused")
    await page.get_by_label(t["staff.activate.password"], exact=True).fill(STAFF_PASSWORD)
    await page.get_by_role("button", name=t["staff.activate.submit"]).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(t["staff.security.title"])
    await at("enrol-choice")

    await page.get_by_role("link", name=t["staff.enrol.choose_totp"]).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(t["staff.enrol.totp_title"])
    await expect(page.locator("svg.qr")).to_be_visible()
    await at("totp")
    secret = "".join((await page.locator("#secret").text_content() or "").split())
    await page.get_by_label(t["staff.factor.code"]).fill("000000")
    await page.get_by_role("button", name=t["staff.enrol.totp_submit"]).click()
    await expect(page.get_by_label(t["staff.factor.code"])).to_be_focused()
    await at("totp-refused")
    step = totp.step_at(time.time())
    await page.get_by_label(t["staff.factor.code"]).fill(totp.code_at(secret, step))
    await page.get_by_label(t["staff.enrol.name"]).fill("Work phone")
    await page.get_by_role("button", name=t["staff.enrol.totp_submit"]).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(t["staff.codes.title"])
    await expect(page.locator(".codes li")).to_have_count(10)
    await at("recovery-codes")

    await page.get_by_role("link", name=t["staff.codes.continue"]).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(t["staff.home.title"])
    await expect(page.get_by_text(email)).to_be_visible()
    await at("home")
    for name, heading in (
        ("staff.nav.members", "staff.members.title"),
        ("staff.nav.audit", "staff.audit.title"),
        ("staff.nav.security", "staff.security.title"),
    ):
        await (
            page.get_by_role("navigation", name=t["staff.nav"])
            .get_by_role("link", name=t[name])
            .click()
        )
        await expect(page.get_by_role("heading", level=1)).to_have_text(t[heading])
        await at(name.rsplit(".", 1)[1])

    await sign_out(page, t)
    await at("login")
    await page.get_by_label(t["staff.login.email"]).fill(email)
    await page.get_by_label(t["staff.login.password"], exact=True).fill("not the password")
    await page.get_by_role("button", name=t["staff.login.submit"]).click()
    await expect(page.get_by_role("alert")).to_have_text(t["staff.login.failed"])
    await at("login-failed")
    await sign_in_password(page, t, email)
    await at("second-step")
    # The code the enrolment used is spent; the app's next one is not.
    await page.get_by_label(t["staff.factor.code"]).fill(totp.code_at(secret, step))
    await page.get_by_role("button", name=t["staff.factor.totp_submit"]).click()
    await expect(page.get_by_role("alert")).to_have_text(t["staff.login.factor_failed"])
    await at("second-step-failed")
    await page.get_by_label(t["staff.factor.code"]).fill(totp.code_at(secret, step + 1))
    await page.get_by_role("button", name=t["staff.factor.totp_submit"]).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(t["staff.home.title"])
    return email
