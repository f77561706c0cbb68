"""A helpdesk call in a real Chromium: a patron has locked themselves out with wrong passwords;
a helpdesk member signs in (password and authenticator code), finds them by pass number,
lifts the block and sends a reset link, each with a reason; the mail reaches the SMTP catcher
and the patron sets a new password with it and logs in. The search page, the patron's page
and the page after an action are checked by axe; the README's pictures of the helpdesk are
taken here (docs/img/staff-*.png are copies of the `readme-staff-*.png` ones).

The patron's browser runs without JavaScript, as in the patron journeys; the console's pages
need none either, and the axe checks use a browser that ignores the CSP (axe is a script).
"""

from __future__ import annotations

import asyncio

import pytest
from playwright.async_api import Page, ViewportSize, expect

from auth.pages import i18n
from auth.staff.services import STAFF_SERVICES
from tests.browser.conftest import PASSWORD, Library, NewContext, Shoot
from tests.browser.test_accessibility import blocking_violations
from tests.browser.test_patron_journeys import NEW_PASSWORD, log_in
from tests.helpers import PASSWORD as STAFF_PASSWORD
from tests.staff_support import Member, add_member

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

WRONG = "a wrong guess at it"
# The README's pictures: the search as it is, the patron page down to its first sections.
SHORT: ViewportSize = {"width": 1000, "height": 560}
TALL: ViewportSize = {"width": 1000, "height": 1100}


async def sign_in(page: Page, t: dict[str, str], member: Member) -> None:
    """The console's sign-in: e-mail address and password, then the authenticator's code."""
    await page.goto("/staff/login")
    await page.get_by_label(t["staff.login.email"]).fill(member.email)
    await page.get_by_label(t["staff.login.password"], exact=True).fill(STAFF_PASSWORD)
    await page.get_by_role("button", name=t["staff.login.submit"]).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(t["staff.factor.title"])
    await page.get_by_label(t["staff.factor.code"]).fill(member.code())
    await page.get_by_role("button", name=t["staff.factor.totp_submit"]).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(t["staff.home.title"])


@pytest.mark.timeout(240)
async def test_a_helpdesk_call_lifts_the_block_and_sends_a_reset_that_works(
    library: Library, new_context: NewContext, axe_script: str, shoot: Shoot
) -> None:
    t = dict(i18n.translator("en"))
    # Names as the README's pictures should show them (the module has a database of its own).
    patron = await library.add_patron(username="anna.devries", email="anna.devries@example.org")
    assert patron.email is not None

    # The patron: five wrong passwords, then even the right one is refused for a while.
    at_home = await (await new_context("en", java_script_enabled=False)).new_page()
    await at_home.goto("/reservations/")
    for _ in range(5):
        await log_in(at_home, patron.pass_number, WRONG)
        await expect(at_home.get_by_role("alert")).to_have_text(t["login.failed"])
    await log_in(at_home, patron.pass_number, PASSWORD)
    await expect(at_home.get_by_role("alert")).to_have_text(t["login.throttled"])
    await asyncio.gather(*library.services.background)  # the failed logins' trail rows

    # The helpdesk, with the patron on the phone.
    member = await add_member(library, role="helpdesk", email="helpdesk@library.example.org")
    desk = await (await new_context("en", bypass_csp=True, viewport=TALL)).new_page()
    found: dict[str, list[str]] = {}

    async def check(name: str, lang: str = "en") -> None:
        await expect(desk.locator("html")).to_have_attribute("lang", lang)
        found[name] = await blocking_violations(desk, axe_script)
        await shoot(desk, name)

    await sign_in(desk, t, member)
    await desk.get_by_label(t["staff.home.query"]).fill(patron.pass_number)
    await desk.get_by_role("button", name=t["staff.home.search"]).click()
    await expect(desk.get_by_role("heading", level=1)).to_have_text(t["staff.patrons.title"])
    match = desk.get_by_role("row", name=patron.username)
    await expect(match).to_contain_text(patron.email)
    await expect(match).to_contain_text(t["staff.patrons.key.pass_number"])
    await check("search")
    await desk.set_viewport_size(SHORT)
    await shoot(desk, "search", "readme-staff-search.png")
    await desk.set_viewport_size(TALL)

    await match.get_by_role("link", name=patron.username).click()
    title = t["staff.patron.title"].format(username=patron.username)
    await expect(desk.get_by_role("heading", level=1)).to_have_text(title)
    await expect(desk.locator(".block-state")).to_contain_text(
        t["staff.patron.block.blocked"].format(failures=5)
    )
    await expect(
        desk.get_by_role("table", name=t["staff.patron.sign_ins"]).get_by_role("row")
    ).to_have_count(5 + 1)
    await check("patron")
    await shoot(desk, "patron", "readme-staff-patron.png")

    # No reason, no action: the message sits at the field, which has the focus.
    unblock = desk.get_by_role("form", name=t["staff.patron.unblock.title"])
    await unblock.get_by_role("button", name=t["staff.patron.unblock.submit"]).click()
    unblock = desk.get_by_role("form", name=t["staff.patron.unblock.title"])
    reason = unblock.get_by_label(t["staff.patron.reason"])
    await expect(reason).to_be_focused()
    await expect(unblock).to_contain_text(t["staff.patron.error.reason"])
    await check("reason-missing")
    await reason.fill("Locked out; identity checked by phone")
    await unblock.get_by_role("button", name=t["staff.patron.unblock.submit"]).click()
    await expect(desk.get_by_role("status")).to_have_text(t["staff.patron.done.unblocked"])
    await expect(desk.locator(".block-state")).to_have_text(t["staff.patron.block.none"])
    await check("unblocked")

    reset = desk.get_by_role("form", name=t["staff.patron.reset.title"])
    await reset.get_by_label(t["staff.patron.reason"]).fill("Forgot the password")
    await reset.get_by_label(t["staff.patron.mail_lang"]).select_option("en")
    await reset.get_by_role("button", name=t["staff.patron.reset.submit"]).click()
    await expect(desk.get_by_role("status")).to_have_text(
        t["staff.patron.done.reset"].format(email=patron.email)
    )
    await expect(desk.get_by_role("table", name=t["staff.patron.links.caption"])).to_contain_text(
        t["staff.patron.link.reset"]
    )
    await check("reset-sent")
    await shoot(desk, "reset-sent", "readme-staff-done.png")
    # The same pages in Dutch, by the switch every page has.
    nl = dict(i18n.translator("nl"))
    await desk.get_by_role("link", name="Nederlands").click()
    await expect(desk.get_by_role("status")).to_have_text(
        nl["staff.patron.done.reset"].format(email=patron.email)
    )
    await check("patron-nl", "nl")
    await desk.goto(f"/staff/patrons?q={patron.username}")
    await expect(desk.get_by_role("heading", level=1)).to_have_text(nl["staff.patrons.title"])
    await check("search-nl", "nl")

    # The patron: the mail arrived; its link sets a new password that logs in.
    link = await library.mailed_link(patron.email, "reset", "en")
    await at_home.goto(library.path(link))
    await expect(at_home.get_by_role("heading", name="Choose a new password")).to_be_visible()
    await at_home.get_by_label("New password").fill(NEW_PASSWORD)
    await at_home.get_by_role("button", name="Save new password").click()
    await expect(at_home.get_by_role("status")).to_have_text(t["login.notice.reset"])
    await at_home.goto("/reservations/")
    await log_in(at_home, patron.pass_number, NEW_PASSWORD)
    await expect(at_home).to_have_url(f"{library.url}/reservations/")
    await expect(at_home.get_by_role("heading", name="My reservations")).to_be_visible()

    # Both actions are on the trail with their reasons and the helpdesk member.
    trail = await library.app[STAFF_SERVICES].audit.for_account(
        patron.id, limit=50, actions=("helpdesk_block_lifted", "helpdesk_reset_sent")
    )
    assert sorted((row.action, row.reason, row.actor_id) for row in trail) == [
        ("helpdesk_block_lifted", "Locked out; identity checked by phone", member.id),
        ("helpdesk_reset_sent", "Forgot the password", member.id),
    ]
    assert found == {name: [] for name in found}, found
    assert len(found) == 7
