"""The page a patron whose membership ran out meets on a service that requires one: reached by
logging in on the way (never sent back to the login), saying when it ran out and where to
renew, in the library's colours under the real Content-Security-Policy, and clean to axe in
both languages."""

from __future__ import annotations

from datetime import date

import pytest
from playwright.async_api import Page, expect

from auth.pages import i18n
from auth.store.accounts import Account
from auth.store.memberships import Memberships
from gateway import appkeys
from tests.browser.conftest import PASSWORD, Library, NewContext, Shoot
from tests.browser.test_accessibility import HOUSE_COLOUR, blocking_violations

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

RAN_OUT = date(2024, 1, 31)
RENEW = "https://www.kb.nl/lid-worden"


async def lapsed_patron(library: Library) -> Account:
    patron = await library.add_patron()
    await Memberships(library.app[appkeys.POOL]).change(
        "kb", patron.pass_number, type="adult", valid_until=RAN_OUT
    )
    return patron


async def log_in_on_the_way(page: Page, patron: Account, lang: str) -> int:
    """Open the digital library, log in on the form it sends to, and return the status of
    the page the login's redirects end at."""
    t = i18n.translator(lang)
    await page.goto("/digital/")
    await expect(page.get_by_role("heading", level=1)).to_have_text(t["login.title"])
    await page.get_by_label(t["login.username"]).fill(patron.username)
    await page.get_by_label(t["login.password"], exact=True).fill(PASSWORD)
    async with page.expect_navigation() as navigation:
        await page.get_by_role("button", name=t["login.submit"]).click()
    response = await navigation.value
    assert response is not None
    return response.status


async def test_an_expired_membership_shows_the_date_and_the_way_to_renew(
    library: Library, new_context: NewContext, shoot: Shoot
) -> None:
    patron = await lapsed_patron(library)
    page = await (await new_context("en")).new_page()
    assert await log_in_on_the_way(page, patron, "en") == 403
    assert page.url == library.url + "/digital/"
    await expect(page.get_by_role("heading", level=1)).to_have_text("Membership required")
    await expect(
        page.get_by_text(
            f"Your membership of Koninklijke Bibliotheek ran out on {RAN_OUT.isoformat()}."
        )
    ).to_be_visible()
    renew = page.get_by_role("link", name="Renew your membership")
    await expect(renew).to_have_attribute("href", RENEW)
    # The stylesheet and the house colour hold under the page's policy.
    await expect(page.get_by_role("banner")).to_have_css("background-color", HOUSE_COLOUR)
    await shoot(page, "membership-required", "readme-membership-required.png")


@pytest.mark.parametrize("lang", ["nl", "en"])
async def test_the_membership_page_has_no_serious_accessibility_problem(
    lang: str, library: Library, new_context: NewContext, axe_script: str
) -> None:
    patron = await lapsed_patron(library)
    page = await (await new_context(lang, bypass_csp=True)).new_page()
    assert await log_in_on_the_way(page, patron, lang) == 403
    t = i18n.translator(lang)
    await expect(page.get_by_role("heading", level=1)).to_have_text(t["membership.title"])
    await expect(page.locator("html")).to_have_attribute("lang", lang)
    assert await blocking_violations(page, axe_script) == []
