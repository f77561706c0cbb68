"""The patron's own list of sessions on the account page, the two forms that end them, the
activity it shows, and the sign-in notice: through the whole gateway, on a real database.

Each browser here is one session cookie, sent explicitly with every request (`fetch`), so a
test can hold several browsers of one patron side by side."""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestServer
from cryptography.fernet import MultiFernet

from auth.credentials.passwords import PasswordHasher
from auth.mail import SmtpTransport
from auth.pages import i18n
from auth.pages.sessions_list import browser_text, when
from auth.services import SERVICES
from auth.store.accounts import Account
from gateway.config.settings import Settings, SettingsError
from gateway.demo.mailcatcher import MailCatcher
from tests.helpers import (
    PASSWORD,
    Gateway,
    MakeGateway,
    account_on,
    add_patron,
    attempt,
    attempt_on_device,
    csrf_in,
    fetch,
    followed,
    jar_cookie,
    link_in,
    mail_for,
    mail_subject,
    open_cookie,
    outbox_for,
    page_text,
    plain_text,
    post_form,
    routes_for,
    seal_cookie,
    set_cookies,
    settle,
)
from tests.test_oidc_provider import CLIENTS, SECRET, answer, authorize_url

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Safari/537.36"
)
SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
# No Accept-Language and no lang cookie: pages and mails are in the default language.
T = i18n.translator(i18n.DEFAULT)
THIS_BROWSER = f'<span class="this">{T["sessions.this_browser"]}</span>'
_HANDLE_FIELD = re.compile(r'name="session" value="([0-9a-f]{64})"')


@pytest.fixture
async def federated(
    make_gateway: MakeGateway, backend: TestServer, monkeypatch: pytest.MonkeyPatch
) -> Gateway:
    """The usual gateway with connected libraries (tests/test_oidc_provider.py's clients)."""
    monkeypatch.setenv("OIDC_TEST_SECRET", SECRET)
    return await make_gateway(routes_for(backend.port), clients=CLIENTS)


@pytest.fixture
async def patron(pool: asyncpg.Pool, hasher: PasswordHasher) -> Account:
    return await add_patron(pool, hasher)


async def browser(gw: Gateway, patron: Account, user_agent: str = FIREFOX) -> str:
    """Log `patron` in from a browser of its own (an empty cookie jar, so no device cookie
    either) sending `user_agent`; its session cookie."""
    gw.session.cookie_jar.clear()
    headers = {"User-Agent": user_agent}
    form = await gw.get("/auth/login", headers=headers)
    fields = {"csrf_token": csrf_in(await form.text()), "username": patron.username}
    resp = await post_form(gw, "/auth/login", {**fields, "password": PASSWORD}, headers=headers)
    assert resp.status == 303
    cookie = jar_cookie(gw)
    assert cookie is not None
    return cookie


def handle_of(keys: MultiFernet, cookie: str) -> str:
    """What the list calls this cookie's session: the hex SHA-256 of its id."""
    sid = open_cookie(keys, cookie)["session"]["sid"]
    return hashlib.sha256(sid.encode()).hexdigest()


async def account_page(gw: Gateway, cookie: str) -> str:
    resp = await fetch(gw, "/auth/account", cookie, headers={"Accept": "text/html"})
    assert resp.status == 200
    return await resp.text()


async def post_from(
    gw: Gateway, cookie: str, path: str, fields: dict[str, str] | None = None
) -> ClientResponse:
    """Post a form of the account page from this browser, with the token its page gave."""
    token = csrf_in(await account_page(gw, cookie))
    return await fetch(
        gw, path, cookie, method="POST", data={"csrf_token": token, **(fields or {})}
    )


def listed(page: str) -> str:
    """The page's list of sessions alone (the recent events below it name browsers too)."""
    return page.split('<ul class="sessions"', 1)[1].split("</ul>", 1)[0]


def refreshed(resp: ClientResponse, cookie: str) -> str:
    """The browser's cookie after `resp` (which may have rewritten it)."""
    given = set_cookies(resp)
    return given[0].value if given else cookie


async def is_sent_to_login(gw: Gateway, cookie: str) -> bool:
    resp = await fetch(gw, "/reservations/mine", cookie, headers={"Accept": "text/html"})
    assert resp.status in (200, 302)
    return resp.status == 302 and resp.headers["Location"].startswith("/auth/login?")


# --- The list ------------------------------------------------------------------------------------


async def test_the_list_names_each_browser_of_the_patron_and_marks_this_one(
    gw: Gateway, patron: Account, cookie_keys: MultiFernet
) -> None:
    """Defends against a list a patron cannot read (raw User-Agents, no way to tell which one
    they are holding) and against offering this browser's own session to be ended there."""
    other = await browser(gw, patron, FIREFOX)
    this = await browser(gw, patron, CHROME)
    page = await account_page(gw, this)
    assert T["sessions.title"] in page
    assert T["sessions.browser_on_system"].format(browser="Firefox 125", system="Linux") in page
    assert T["sessions.browser_on_system"].format(browser="Chrome 124", system="Windows") in page
    assert page.count(THIS_BROWSER) == 1
    # This browser first, and marked; only the other one has a form to end it.
    assert page.index("Chrome 124") < page.index(THIS_BROWSER) < page.index("Firefox 125")
    assert _HANDLE_FIELD.findall(page) == [handle_of(cookie_keys, other)]
    assert 'action="/auth/account/sessions/end-others"' in page
    assert FIREFOX not in page and CHROME not in page


async def test_alone_the_patron_sees_this_browser_and_no_form_to_end_others(
    gw: Gateway, patron: Account
) -> None:
    page = await account_page(gw, await browser(gw, patron, SAFARI))
    assert T["sessions.browser_on_system"].format(browser="Mobile Safari 17", system="iOS") in page
    assert page.count(THIS_BROWSER) == 1
    assert _HANDLE_FIELD.findall(page) == []
    assert "/auth/account/sessions/end-others" not in page


async def test_a_session_signed_in_to_a_connected_library_names_it(
    federated: Gateway, patron: Account, pool: asyncpg.Pool, cookie_keys: MultiFernet
) -> None:
    """The patron sees which libraries a session logged them in to, by the name clients.yaml
    gives; one since dropped from clients.yaml still shows, by its client_id."""
    gw = federated
    other = await browser(gw, patron, FIREFOX)
    _, params = answer(await gw.get(authorize_url(), allow_redirects=False))
    assert params.get("code"), params
    this = await browser(gw, patron, CHROME)
    page = await account_page(gw, this)
    libraries = f"<dt>{T['sessions.libraries']}</dt><dd>De Online Bibliotheek</dd>"
    assert page.count(libraries) == 1
    assert page.index("Firefox 125") < page.index(libraries)  # under the session it was in

    await pool.execute(
        "INSERT INTO oidc_session_clients (session, client_id, account_id, sub)"
        " VALUES ($1, 'retired-library', $2, $3)",
        handle_of(cookie_keys, other),
        patron.id,
        patron.id,
    )
    page = await account_page(gw, this)
    assert "<dd>De Online Bibliotheek, retired-library</dd>" in page


# --- Ending sessions -----------------------------------------------------------------------------


async def test_ending_the_other_session_logs_that_browser_out_at_once(
    federated: Gateway, patron: Account, pool: asyncpg.Pool, cookie_keys: MultiFernet
) -> None:
    """Defends against an ended session that keeps working until a cache runs out, and
    against a connected library that is never told (its back-channel logout is queued)."""
    gw = federated
    other = await browser(gw, patron, FIREFOX)
    answer(await gw.get(authorize_url(), allow_redirects=False))
    this = await browser(gw, patron, CHROME)
    assert await account_on(gw, other) == patron.id

    resp = await post_from(
        gw, this, "/auth/account/sessions/end", {"session": handle_of(cookie_keys, other)}
    )
    assert resp.status == 303 and resp.headers["Location"] == "/auth/account"
    assert await account_on(gw, other) is None
    assert await is_sent_to_login(gw, other)
    assert await account_on(gw, this) == patron.id
    page = await account_page(gw, refreshed(resp, this))
    assert page_text("sessions.ended") in page
    assert "Firefox 125" not in listed(page) and page.count(THIS_BROWSER) == 1
    queued = await pool.fetch(
        "SELECT client_id FROM backchannel_logouts WHERE session = $1",
        handle_of(cookie_keys, other),
    )
    assert [row["client_id"] for row in queued] == ["online-library"]


async def test_ending_every_other_session_keeps_this_one(
    gw: Gateway, patron: Account, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    first = await browser(gw, patron, FIREFOX)
    second = await browser(gw, patron, SAFARI)
    this = await browser(gw, patron, CHROME)
    someone_else = await browser(gw, await add_patron(pool, hasher), FIREFOX)

    resp = await post_from(gw, this, "/auth/account/sessions/end-others")
    assert resp.status == 303 and resp.headers["Location"] == "/auth/account"
    assert await account_on(gw, first) is None
    assert await account_on(gw, second) is None
    assert await account_on(gw, this) == patron.id
    assert await account_on(gw, someone_else) is not None
    page = await account_page(gw, refreshed(resp, this))
    assert page_text("sessions.ended_others") in page
    assert page.count(f"<dt>{T['sessions.started']}</dt>") == 1
    assert page.count(THIS_BROWSER) == 1


@pytest.mark.parametrize("form", ["one", "all others"])
async def test_a_session_ended_on_one_instance_is_over_on_another(
    make_gateway: MakeGateway,
    backend: TestServer,
    patron: Account,
    cookie_keys: MultiFernet,
    form: str,
) -> None:
    """Defends against an ended session living on in another instance's cache."""
    first = await make_gateway(routes_for(backend.port))
    second = await make_gateway(routes_for(backend.port))
    other = await browser(first, patron, FIREFOX)
    this = await browser(first, patron, CHROME)
    assert await account_on(second, other) == patron.id  # now in the second one's cache
    registry = second.app[SERVICES].registry
    heard = registry.notified
    if form == "one":
        fields = {"session": handle_of(cookie_keys, other)}
        resp = await post_from(first, this, "/auth/account/sessions/end", fields)
    else:
        resp = await post_from(first, this, "/auth/account/sessions/end-others")
    assert resp.status == 303
    await asyncio.wait_for(registry.wait_notified(heard + 1), timeout=30)
    assert await account_on(second, other) is None
    assert await account_on(second, this) == patron.id


async def test_a_handle_not_of_the_patrons_other_sessions_ends_nothing(
    gw: Gateway,
    patron: Account,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    cookie_keys: MultiFernet,
) -> None:
    """Defends against one patron logging another out by sending the other's session handle
    (the identity JWT gives backends part of it), and against a handle that tells by its
    answer whether it named a session."""
    stranger = await add_patron(pool, hasher)
    theirs = await browser(gw, stranger, FIREFOX)
    mine = await browser(gw, patron, CHROME)
    tries = {
        "another patron's": handle_of(cookie_keys, theirs),
        "random": secrets.token_hex(32),
        "not hex": "z" * 64,
        "too short": handle_of(cookie_keys, theirs)[:32],
        "empty": "",
        "this browser's own": handle_of(cookie_keys, mine),
    }
    for what, handle in tries.items():
        resp = await post_from(gw, mine, "/auth/account/sessions/end", {"session": handle})
        assert (resp.status, resp.headers["Location"]) == (303, "/auth/account"), what
        assert await account_on(gw, theirs) == stranger.id, what
        assert await account_on(gw, mine) == patron.id, what


@pytest.mark.parametrize(
    "path", ["/auth/account/sessions/end", "/auth/account/sessions/end-others"]
)
@pytest.mark.parametrize("token", ["missing", "wrong"])
async def test_a_form_without_this_sessions_token_is_refused(
    gw: Gateway, patron: Account, cookie_keys: MultiFernet, path: str, token: str
) -> None:
    """Defends against another site making a patron's browser end their sessions."""
    other = await browser(gw, patron, FIREFOX)
    this = await browser(gw, patron, CHROME)
    fields = {"session": handle_of(cookie_keys, other)}
    if token == "wrong":
        fields["csrf_token"] = secrets.token_urlsafe(32)
    resp = await fetch(gw, path, this, method="POST", data=fields)
    assert resp.status == 403
    assert page_text("csrf.title") in await resp.text()
    assert await account_on(gw, other) == patron.id


@pytest.mark.parametrize(
    "path", ["/auth/account/sessions/end", "/auth/account/sessions/end-others"]
)
async def test_an_anonymous_form_ends_nothing_and_is_sent_to_login(
    gw: Gateway, patron: Account, cookie_keys: MultiFernet, path: str
) -> None:
    victim = await browser(gw, patron, FIREFOX)
    gw.session.cookie_jar.clear()
    form = await gw.get("/auth/login")  # an anonymous session, with a token of its own
    fields = {"csrf_token": csrf_in(await form.text()), "session": handle_of(cookie_keys, victim)}
    resp = await post_form(gw, path, fields)
    assert resp.status == 302
    assert resp.headers["Location"].startswith("/auth/login?")
    assert await account_on(gw, victim) == patron.id


# --- Last active ---------------------------------------------------------------------------------


async def test_activity_is_noted_in_memory_and_written_by_the_flush(
    gw: Gateway, patron: Account, pool: asyncpg.Pool, cookie_keys: MultiFernet
) -> None:
    """The list's "last active" follows the patron's use, without a query per request."""
    cookie = await browser(gw, patron, FIREFOX)
    key = bytes.fromhex(handle_of(cookie_keys, cookie))
    long_ago = await pool.fetchval(
        "UPDATE sessions SET last_seen_at = now() - interval '20 minutes' WHERE sid_hash = $1"
        " RETURNING last_seen_at",
        key,
    )
    data = open_cookie(cookie_keys, cookie)
    data["session"]["seen"] -= 120  # last recorded two minutes ago: time to record again
    data["session"]["iat"] -= 120
    quiet = seal_cookie(cookie_keys, data)
    assert await account_on(gw, quiet) == patron.id
    stored = "SELECT last_seen_at FROM sessions WHERE sid_hash = $1"
    assert await pool.fetchval(stored, key) == long_ago  # noted, not written yet

    assert await gw.app[SERVICES].registry.flush_activity() == 1
    written = await pool.fetchval(stored, key)
    assert written > long_ago
    assert await pool.fetchval("SELECT now() - $1::timestamptz < interval '1 minute'", written)
    assert await gw.app[SERVICES].registry.flush_activity() == 0  # nothing new since


async def test_noted_activity_is_written_when_the_gateway_stops(
    make_gateway: MakeGateway,
    backend: TestServer,
    patron: Account,
    pool: asyncpg.Pool,
    cookie_keys: MultiFernet,
) -> None:
    """A clean shutdown (a rolling restart) loses none of the noted activity."""
    gw = await make_gateway(routes_for(backend.port))
    cookie = await browser(gw, patron, FIREFOX)
    key = bytes.fromhex(handle_of(cookie_keys, cookie))
    await pool.execute(
        "UPDATE sessions SET last_seen_at = now() - interval '20 minutes' WHERE sid_hash = $1",
        key,
    )
    data = open_cookie(cookie_keys, cookie)
    data["session"]["seen"] -= 120
    data["session"]["iat"] -= 120
    assert await account_on(gw, seal_cookie(cookie_keys, data)) == patron.id
    await gw.close()
    assert await pool.fetchval(
        "SELECT now() - last_seen_at < interval '1 minute' FROM sessions WHERE sid_hash = $1", key
    )


async def test_the_list_shows_when_the_other_browser_was_last_active(
    gw: Gateway, patron: Account, pool: asyncpg.Pool, cookie_keys: MultiFernet
) -> None:
    other = await browser(gw, patron, FIREFOX)
    moment = datetime(2026, 5, 3, 12, 5, tzinfo=UTC)
    await pool.execute(
        "UPDATE sessions SET created_at = $2, last_seen_at = now() - interval '5 minutes'"
        " WHERE sid_hash = $1",
        bytes.fromhex(handle_of(cookie_keys, other)),
        moment,
    )
    page = await account_page(gw, await browser(gw, patron, CHROME))
    assert f'<time datetime="2026-05-03T12:05Z">{when(moment, i18n.DEFAULT)}</time>' in page
    assert page.count(f">{T['sessions.now']}</time>") == 1  # this browser: in use now


async def test_a_session_long_idle_is_not_listed(
    gw: Gateway, patron: Account, pool: asyncpg.Pool, cookie_keys: MultiFernet
) -> None:
    """A session unused for longer than the idle timeout is over; it is not offered."""
    other = await browser(gw, patron, FIREFOX)
    await pool.execute(
        "UPDATE sessions SET last_seen_at = now() - interval '2 hours' WHERE sid_hash = $1",
        bytes.fromhex(handle_of(cookie_keys, other)),
    )
    page = await account_page(gw, await browser(gw, patron, CHROME))
    assert "Firefox" not in listed(page) and page.count(THIS_BROWSER) == 1


# --- Words and dates -----------------------------------------------------------------------------


def test_browsers_and_moments_read_in_the_pages_language() -> None:
    assert browser_text(FIREFOX, "en") == "Firefox 125 on Linux"
    assert browser_text(CHROME, "nl") == "Chrome 124 op Windows"
    assert browser_text(None, "en") == "Unknown browser"
    assert browser_text("", "nl") == "Onbekende browser"
    assert browser_text("definitely not a browser", "en") == "Unknown browser"
    moment = datetime(2026, 1, 31, 23, 30, tzinfo=UTC)  # Amsterdam: 1 February, 00:30
    assert when(moment, "en") == "1 February 2026, 00:30"
    assert when(moment, "nl") == "1 februari 2026 om 00:30"
    assert when(datetime(2026, 7, 4, 8, 0, tzinfo=UTC), "nl") == "4 juli 2026 om 10:00"


# --- Sign-in notices -----------------------------------------------------------------------------


def test_the_setting_is_off_unless_turned_on() -> None:
    assert Settings().signin_notices is False
    assert Settings.from_env({"GATEWAY_SIGNIN_NOTICES": "true"}).signin_notices is True
    assert Settings.from_env({"GATEWAY_SIGNIN_NOTICES": "off"}).signin_notices is False
    with pytest.raises(SettingsError, match="GATEWAY_SIGNIN_NOTICES"):
        Settings.from_env({"GATEWAY_SIGNIN_NOTICES": "sometimes"})


async def test_without_the_setting_a_new_browser_is_not_mailed(
    mailing_gw: Gateway, patron: Account, pool: asyncpg.Pool
) -> None:
    assert patron.email is not None
    await browser(mailing_gw, patron, FIREFOX)
    assert await outbox_for(pool, patron.email) == []


async def test_with_the_setting_a_new_browser_is_mailed_and_a_known_one_is_not(
    make_gateway: MakeGateway,
    backend: TestServer,
    mail_catcher: MailCatcher,
    patron: Account,
    pool: asyncpg.Pool,
) -> None:
    """Defends against a stranger's login going unnoticed, and against a notice for every
    login from the patron's own browser (which nobody would read any more)."""
    assert patron.email is not None
    gw = await make_gateway(
        routes_for(backend.port),
        env={"GATEWAY_SIGNIN_NOTICES": "true"},
        mail_transport=SmtpTransport(mail_catcher.url),
    )
    await browser(gw, patron, FIREFOX)
    [queued] = await outbox_for(pool, patron.email)
    assert queued["subject"] == mail_subject("new_signin")
    await settle(gw)  # sent now, not when the worker gets to it
    mail = await mail_for(mail_catcher, patron.email, "new_signin")
    text = plain_text(mail)
    assert "Firefox 125 op Linux" in text and patron.username in text
    assert followed(link_in(mail)) == "/auth/account"

    # The patron's own browser, which the device cookie of an earlier login vouches for.
    status, _, device = await attempt_on_device(gw, patron.username, PASSWORD)
    assert status == 303 and device is not None
    assert len(await outbox_for(pool, patron.email)) == 2  # that first login was new too
    assert await attempt(gw, patron.username, PASSWORD, device=device) == (303, None)
    assert len(await outbox_for(pool, patron.email)) == 2
