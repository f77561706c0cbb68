"""What Chromium itself says about the pages: every state of every /auth/* page (the walk the
accessibility test takes, tests/browser/patron_pages.py), a connected library's login page,
the consent page, and the staff console's pages, in Dutch and in English, under the pages'
real Content-Security-Policy, with JavaScript on.

At every stop the test collects the console's warnings and errors, uncaught exceptions,
requests that failed or came back 4xx/5xx (a missing stylesheet or icon), and CSP
violations (the `securitypolicyviolation` events, heard by a listener added to every document
through DevTools, which the policy does not govern; Chromium also logs each to the console).
A page that loads cleanly says nothing at all, so anything heard is a finding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import pytest
from playwright.async_api import ConsoleMessage, Error, Page, Request, Response, Route, expect

from auth import urls
from auth.pages import i18n
from tests.browser.conftest import CLIENT_NAME, PARTNER_NAME, PASSWORD, Library, NewContext
from tests.browser.patron_pages import (
    CLIENT_LOGIN,
    PAGES,
    PARTNER_AUTHORIZE,
    visit,
    walk_patron_pages,
)
from tests.browser.staff_pages import STAFF_PAGES, walk_staff_console

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

# Chromium logs every 4xx/5xx response, the page's own document included, as "Failed to load
# resource: ... status of 404 (Not Found)". A page that is an answer of its own (401 for a
# refused login, 404 for a wrong address, 410 for a spent link) is meant to come with its
# status, which the walks check; only that one line, for that document, is not a finding.
OWN_STATUS = re.compile(r"Failed to load resource: the server responded with a status of (\d+)")

# Messages that are not the product's fault and cannot be avoided, each with its reason.
# Keep it empty unless a Chromium quirk forces an entry; a product bug is fixed, not listed.
ALLOWED: dict[str, re.Pattern[str]] = {}

# Findings in code these tests may not change, reported to its owners: each is expected at its
# stop, exactly, so the test also fails the day it is fixed, and the entry goes. None now.
REPORTED: dict[str, list[str]] = {}

# Added to every document before its own content, outside the page's CSP (DevTools runs it):
# keeps each violation until the test reads them.
LISTEN_FOR_VIOLATIONS = """
window.__violations = [];
window.addEventListener("securitypolicyviolation", (event) => {
    window.__violations.push(
        `${event.effectiveDirective} refused ${event.blockedURI || "inline"}`
        + ` (${event.sourceFile || event.documentURI}:${event.lineNumber})`
    );
}, true);
"""
ICONS = "() => [...document.querySelectorAll('link[rel~=icon]')].map((link) => link.href)"
# One turn of the page's task queue, so that violations queued while the document was parsed
# have been dispatched, then what the listener kept.
READ_VIOLATIONS = """
() => new Promise((resolve) => setTimeout(() => resolve(window.__violations.splice(0))))
"""


def allowed(text: str) -> bool:
    return any(pattern.search(text) for pattern in ALLOWED.values())


@dataclass
class Complaints:
    """Everything Chromium says about one page (a tab) as a test walks it, by stop."""

    page: Page
    found: dict[str, list[str]] = field(default_factory=dict)
    heard: list[str] = field(default_factory=list)
    documents: dict[str, int] = field(default_factory=dict)
    icons: set[str] = field(default_factory=set)

    @classmethod
    async def on(cls, page: Page) -> Complaints:
        complaints = cls(page)
        await page.add_init_script(script=LISTEN_FOR_VIOLATIONS)
        page.on("console", complaints._console)
        page.on("pageerror", complaints._page_error)
        page.on("requestfailed", complaints._request_failed)
        page.on("response", complaints._response)
        return complaints

    def _console(self, message: ConsoleMessage) -> None:
        if message.type not in ("warning", "error"):
            return
        own = OWN_STATUS.search(message.text)
        url = message.location.get("url", "")
        if own and self.documents.get(url) == int(own.group(1)):
            return
        # Chromium fetches the icon after the page has loaded, at no moment a test can wait
        # for; `stop` asks for it itself instead.
        if own and urlsplit(url).path == "/favicon.ico":
            return
        if not allowed(message.text):
            self.heard.append(f"console {message.type}: {message.text} ({url})")

    def _page_error(self, error: Error) -> None:
        self.heard.append(f"uncaught: {error.message}")

    def _request_failed(self, request: Request) -> None:
        # Chromium's own fetch of an icon is cut off when the walk moves to the next page
        # before it ends; `stop` has fetched every icon of the page itself already.
        if request.url in self.icons and request.failure == "net::ERR_ABORTED":
            return
        self.heard.append(f"request failed: {request.method} {request.url}: {request.failure}")

    def _response(self, response: Response) -> None:
        request = response.request
        if request.is_navigation_request() and request.frame == self.page.main_frame:
            self.documents[response.url] = response.status
        elif response.status >= 400:
            self.heard.append(f"HTTP {response.status}: {request.method} {response.url}")

    async def stop(self, name: str) -> None:
        """The page is at stop `name`: what was heard since the last stop is this one's."""
        violations: list[str] = await self.page.evaluate(READ_VIOLATIONS)
        self.heard.extend(f"CSP violation: {line}" for line in violations)
        await self._check_icons()
        self.found[name], self.heard = self.heard, []

    async def _check_icons(self) -> None:
        """The page's icons load; a page that declares none gets /favicon.ico asked for."""
        declared: list[str] = await self.page.evaluate(ICONS)
        for icon in declared or [urljoin(self.page.url, "/favicon.ico")]:
            self.icons.add(icon)
            response = await self.page.request.get(icon, max_redirects=0)
            if not response.ok:
                path = urlsplit(icon).path
                why = "" if declared else " (the page declares no icon)"
                self.heard.append(f"icon: HTTP {response.status} for {path}{why}")

    def assert_silent(self) -> None:
        assert self.heard == [], self.heard
        expected = {name: REPORTED.get(name, []) for name in self.found}
        assert self.found == expected, self.found


@pytest.mark.parametrize("lang", ["nl", "en"])
async def test_no_patron_page_makes_chromium_complain(
    lang: str, library: Library, new_context: NewContext
) -> None:
    t = i18n.translator(lang)
    page = await (await new_context(lang)).new_page()
    complaints = await Complaints.on(page)
    await walk_patron_pages(page, library, lang, complaints.stop)

    # A connected library's login page, in its own colours (a <style> with the page's nonce).
    assert await visit(page, CLIENT_LOGIN) == 200
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        t["login.client_title"].format(name=CLIENT_NAME)
    )
    await complaints.stop("client-login")
    # Another organisation's site asks for the details of a patron who is logged in.
    patron = await library.add_patron()
    await visit(page, "/auth/login")
    await page.get_by_label(t["login.username"]).fill(patron.username)
    await page.get_by_label(t["login.password"], exact=True).fill(PASSWORD)
    await page.get_by_role("button", name=t["login.submit"]).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(t["account.title"])
    assert await visit(page, PARTNER_AUTHORIZE) == 200
    await expect(page.get_by_role("heading", level=1)).to_have_text(t["oidc.consent.title"])
    await expect(page.get_by_text(PARTNER_NAME)).not_to_have_count(0)
    await complaints.stop("consent")

    assert list(complaints.found) == [*PAGES, "client-login", "consent"]
    complaints.assert_silent()


@pytest.mark.parametrize("lang", ["nl", "en"])
async def test_no_staff_console_page_makes_chromium_complain(
    lang: str, library: Library, new_context: NewContext
) -> None:
    t = i18n.translator(lang)
    page = await (await new_context(lang)).new_page()
    complaints = await Complaints.on(page)
    await walk_staff_console(page, library, lang, complaints.stop)

    # The helpdesk's pages, which the admin has too: a search and a patron's page.
    patron = await library.add_patron()
    await page.get_by_label(t["staff.home.query"]).fill(patron.pass_number)
    await page.get_by_role("button", name=t["staff.home.search"]).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(t["staff.patrons.title"])
    await complaints.stop("patrons")
    await page.get_by_role("link", name=patron.username).click()
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        t["staff.patron.title"].format(username=patron.username)
    )
    await complaints.stop("patron")
    # The passkey page, as it is on a gateway at an IP address (the passkey journey in
    # test_staff_console.py runs its script under the policy, on a gateway at localhost).
    await visit(page, urls.STAFF_SECURITY_PASSKEY)
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        t["staff.passkey.no_domain.title"]
    )
    await complaints.stop("passkey")
    assert await visit(page, f"{urls.STAFF_ACTIVATE}?token=spent") == 410
    await expect(page.get_by_role("heading", level=1)).to_have_text(
        t["staff.activate.invalid.title"]
    )
    await complaints.stop("activate-dead")

    assert list(complaints.found) == [*STAFF_PAGES, "patrons", "patron", "passkey", "activate-dead"]
    complaints.assert_silent()


async def test_the_watch_hears_a_refused_style_a_missing_stylesheet_and_a_script_error(
    library: Library, new_context: NewContext
) -> None:
    # Proof that the checks above can fail: the login page, served with its real headers, but
    # with an inline style that has no nonce, a stylesheet that does not exist and an
    # uncaught error from DevTools' side.
    page = await (await new_context("en")).new_page()
    complaints = await Complaints.on(page)

    async def spoil(route: Route) -> None:
        response = await route.fetch()
        body = (await response.text()).replace(
            "</head>",
            '<style>main{color:red}</style><link rel="stylesheet" href="/auth/static/gone.css">'
            "</head>",
        )
        await route.fulfill(response=response, body=body)

    await page.route("**/auth/login", spoil)
    assert await visit(page, "/auth/login") == 200
    await page.evaluate("() => { setTimeout(() => { throw new Error('broken on purpose'); }); }")
    await complaints.stop("login")
    heard = "\n".join(complaints.found["login"])
    assert "CSP violation: style-src-elem refused inline" in heard, heard
    assert "console error: Applying inline style violates" in heard, heard
    assert "request failed: GET http://" in heard and "/auth/static/gone.css" in heard, heard
    assert "uncaught: broken on purpose" in heard, heard
    with pytest.raises(AssertionError):
        complaints.assert_silent()
