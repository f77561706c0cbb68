"""The patron's recent security events on `/auth/account`, as the page's HTML has them (no
browser needed): their own and nobody else's, newest first, in the page's language, with
the browser each came from; the library's actions shown as the library's, without the staff
member's name, browser or stated reason."""

from __future__ import annotations

import datetime as dt
import html
import re
import secrets

import asyncpg
import pytest
from aiohttp.http import SERVER_SOFTWARE

from auth.audit import Actor, Event, Origin
from auth.credentials.passwords import PasswordHasher
from auth.pages import i18n
from auth.pages.events_list import SHOWN, entries
from auth.pages.sessions_list import browser_text
from auth.store.audit import AuditTrail, Row
from tests.helpers import Gateway, add_patron, fetch
from tests.test_account_sessions import CHROME, FIREFOX, browser, post_from

NL = i18n.translator("nl")
EN = i18n.translator("en")
EDGE = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51"
)
_ENTRY = re.compile(
    r'<p class="what"><strong>([^<]*)</strong></p>\s*<dl>\s*'
    r'<dt>[^<]*</dt><dd><time datetime="([^"]+)">([^<]*)</time></dd>\s*'
    r"<dt>[^<]*</dt><dd>([^<]*)</dd>"
)


async def events_on_page(gw: Gateway, cookie: str, query: str = "") -> list[tuple[str, str, str]]:
    """The events list of the account page this browser gets: (what, when as ISO, browser),
    top to bottom; also checks the list is a list a screen reader names by its heading."""
    resp = await fetch(gw, "/auth/account" + query, cookie, headers={"Accept": "text/html"})
    assert resp.status == 200
    page = await resp.text()
    assert '<h2 id="events-heading">' in page
    section = page.split('<h2 id="events-heading">', 1)[1].split("</ol>", 1)[0]
    assert '<ol class="events" aria-labelledby="events-heading">' in section
    found = _ENTRY.findall(section)
    assert len(found) == section.count("<li>")
    return [(html.unescape(what), iso, html.unescape(where)) for what, iso, _, where in found]


async def test_the_page_lists_the_patrons_own_events_newest_first_and_nobody_elses(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    other = await add_patron(pool, hasher)
    mine = await browser(gw, patron, FIREFOX)
    new_name = f"reader.renamed.{secrets.token_hex(3)}"
    assert (
        await post_from(
            gw,
            mine,
            "/auth/account/username",
            {"new_username": new_name, "password": "correct horse battery staple"},
        )
    ).status == 303
    await browser(gw, other, CHROME)  # on the other patron's trail, from Chrome
    staff_email = f"desk-{secrets.token_hex(3)}@library.test"
    reason = f"patron phoned about {secrets.token_hex(4)}"
    trail = AuditTrail(pool)
    for account in (patron, other):
        await trail.record(
            Event(
                "helpdesk_block_lifted",
                Actor("staff", secrets.token_hex(8), staff_email),
                Origin("10.1.2.3", EDGE, "desk-request"),
                account_id=account.id,
                reason=reason,
            )
        )

    shown = await events_on_page(gw, mine)
    assert [(what, where) for what, _, where in shown] == [
        (NL["audit.helpdesk_block_lifted"], NL["events.by_library"]),
        # Changed from a client of its own: the browser each request came from.
        (NL["audit.username_changed"], browser_text(SERVER_SOFTWARE, "nl")),
        (NL["audit.login_succeeded"], "Firefox 125 op Linux"),
    ]
    moments = [dt.datetime.fromisoformat(iso) for _, iso, _ in shown]
    assert moments == sorted(moments, reverse=True)
    resp = await fetch(gw, "/auth/account", mine, headers={"Accept": "text/html"})
    page = await resp.text()
    for never in (reason, staff_email, "Edge", "10.1.2.3", "Chrome", other.username):
        assert never not in page, never


async def test_the_list_speaks_the_pages_language(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    cookie = await browser(gw, patron, FIREFOX)
    [(what, _, where)] = await events_on_page(gw, cookie, "?lang=en")
    assert (what, where) == (EN["audit.login_succeeded"], "Firefox 125 on Linux")
    assert (what, where) == ("Logged in", "Firefox 125 on Linux")


async def test_the_list_shows_the_newest_events_only(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    # Older than the login to come: five passes added, then twenty failures, a minute apart.
    await pool.execute(
        "INSERT INTO audit_events (at, actor_kind, action, account_id, user_agent)"
        " SELECT now() - make_interval(mins => 60 - n), 'patron',"
        " CASE WHEN n < 5 THEN 'pass_linked' ELSE 'login_failed' END, $1::uuid, $2"
        " FROM generate_series(0, 24) AS n",
        patron.id,
        CHROME,
    )
    cookie = await browser(gw, patron, FIREFOX)
    shown = await events_on_page(gw, cookie)
    assert len(shown) == SHOWN
    assert [what for what, _, _ in shown] == [NL["audit.login_succeeded"]] + [
        NL["audit.login_failed"]
    ] * (SHOWN - 1)
    assert shown[1][2] == "Chrome 124 op Windows"


def test_an_entry_says_what_when_and_from_which_browser() -> None:
    at = dt.datetime(2026, 5, 3, 12, 5, 9, tzinfo=dt.UTC)

    def row(action: str, kind: str, user_agent: str | None) -> Row:
        return Row(1, at, kind, None, None, action, None, None, None, user_agent, None, None, {})

    rows = [
        row("login_failed", "patron", FIREFOX),
        row("logout", "patron", None),
        row("operator_account_changed", "operator", None),
        row("refresh_token_reuse", "system", "python-requests/2.31"),
        row("made_by_a_later_version", "patron", FIREFOX),
    ]
    shown = entries(rows, "nl")
    assert {(e.at, e.at_iso) for e in shown} == {("3 mei 2026 om 14:05", "2026-05-03T12:05:09Z")}
    assert [(e.what, e.browser) for e in shown] == [
        ("Inloggen mislukt (verkeerd wachtwoord)", "Firefox 125 op Linux"),
        ("Uitgelogd", "Onbekende browser"),
        (NL["audit.operator_account_changed"], "De bibliotheek"),
        (NL["audit.refresh_token_reuse"], "De bibliotheek"),
        ("made_by_a_later_version", "Firefox 125 op Linux"),
    ]


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_the_lists_words_are_in_both_languages(lang: str) -> None:
    for key in ("title", "intro", "when", "browser", "by_library", "none"):
        assert i18n.translator(lang)[f"events.{key}"]
