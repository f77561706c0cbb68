"""Linking a pass of another library on the account page: two accounts made one, proved by
the other account's password, through the real pages on a real database; and what attacks
it: guessing (throttled), forged forms, two merges of one pass at once, a merge racing a login
of the account it absorbs."""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta

import aiohttp
import asyncpg
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestServer

from auth.clock import ZONE
from auth.credentials.passwords import PasswordHasher, Verification
from auth.mail import SmtpTransport
from auth.memberships import Membership
from auth.store.accounts import Account, Accounts
from auth.store.memberships import Memberships
from gateway.demo.mailcatcher import MailCatcher
from tests.helpers import (
    COOKIE,
    FAST_ARGON2,
    PASSWORD,
    Gateway,
    MakeGateway,
    account_on,
    add_patron,
    csrf_in,
    fetch,
    jar_cookie,
    login,
    mail_for,
    page_text,
    plain_text,
    routes_for,
    settle,
    unique_pass_number,
)

INSTITUTIONS = """\
institutions:
  - id: bib
    name: De Bibliotheek
    default: true
  - id: kb
    name: Koninklijke Bibliotheek
    renew_url: https://www.kb.nl/lid-worden
"""
OTHER_PASSWORD = "another library's own password"


class PausingHasher(PasswordHasher):
    """The real hasher, told to stop before its next password check until the test lets it
    go on: what happens between a link's check and its merge, in an order fixed by the test."""

    def __init__(self, **kwargs: int) -> None:
        super().__init__(**kwargs)
        self._pause: tuple[asyncio.Event, asyncio.Event] | None = None

    def pause_next_check(self) -> tuple[asyncio.Event, asyncio.Event]:
        """(set when the check is reached, set it to let the check go on)."""
        pause = (asyncio.Event(), asyncio.Event())
        self._pause = pause
        return pause

    async def verify(self, stored: str | None, password: str) -> Verification:
        pause, self._pause = self._pause, None
        if pause is not None:
            reached, go_on = pause
            reached.set()
            await go_on.wait()
        return await super().verify(stored, password)


@pytest.fixture
async def hasher() -> AsyncIterator[PausingHasher]:
    """The gateway's hasher in this module: the usual one, which can be paused."""
    hasher = PausingHasher(max_workers=2, **FAST_ARGON2)
    yield hasher
    hasher.close()


@pytest.fixture
async def lgw(make_gateway: MakeGateway, backend: TestServer, mail_catcher: MailCatcher) -> Gateway:
    return await make_gateway(
        routes_for(backend.port),
        institutions=INSTITUTIONS,
        mail_transport=SmtpTransport(mail_catcher.url),
    )


async def kb_patron(pool: asyncpg.Pool, hasher: PasswordHasher, **fields: str) -> Account:
    number = "KB" + unique_pass_number()
    return await Accounts(pool).add(
        pass_number=number,
        email=fields.get("email", f"kb{number}@example.org"),
        username=f"kb-reader-{number}",
        password_hash=await hasher.hash(fields.get("password", OTHER_PASSWORD)),
        institution="kb",
    )


async def logged_in(client: Gateway, account: Account, password: str = PASSWORD) -> str:
    """Log in from a fresh browser; the session cookie."""
    client.session.cookie_jar.clear()
    assert (await login(client, account.username, password)).status == 303
    cookie = jar_cookie(client)
    assert cookie is not None
    return cookie


async def link(
    client: Gateway, institution: str, pass_number: str, password: str
) -> ClientResponse:
    """Post the linking form as the patron whose cookie the jar holds."""
    page = await client.get("/auth/account")
    assert page.status == 200
    return await client.post(
        "/auth/account/link",
        data={
            "csrf_token": csrf_in(await page.text()),
            "institution": institution,
            "pass_number": pass_number,
            "password": password,
        },
        allow_redirects=False,
    )


async def test_a_proved_pass_makes_two_accounts_one(
    lgw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, mail_catcher: MailCatcher
) -> None:
    patron = await add_patron(pool, hasher)
    other = await kb_patron(pool, hasher)
    other_cookie = await logged_in(lgw, other, OTHER_PASSWORD)
    family = uuid.uuid4()
    await pool.execute(
        "INSERT INTO oidc_refresh_tokens (token_hash, family, client_id, account_id, session,"
        " scope, offline, auth_time, expires_at) VALUES ($1, $2, 'reader', $3, 'x',"
        " 'openid offline_access', true, now(), now() + interval '30 days')",
        secrets.token_bytes(32),
        family,
        uuid.UUID(other.id),
    )
    await logged_in(lgw, patron)

    resp = await link(lgw, "kb", other.pass_number.lower(), OTHER_PASSWORD)
    assert resp.status == 303 and resp.headers["Location"] == "/auth/account"
    page = await lgw.get("/auth/account")
    text = await page.text()
    assert page_text("account.saved.linked") in text
    assert "Koninklijke Bibliotheek" in text and other.pass_number in text

    assert await Memberships(pool).of(patron.id) == (
        Membership("bib", patron.pass_number),
        Membership("kb", other.pass_number),
    )
    # The absorbed account's session is over at once, and its offline grant with it.
    assert await account_on(lgw, other_cookie) is None
    assert await pool.fetchval(
        "SELECT bool_and(revoked_at IS NOT NULL) FROM oidc_refresh_tokens WHERE family = $1",
        family,
    )
    # Both pass numbers log in to the one account, with the survivor's password.
    for name in (patron.pass_number, other.pass_number, patron.username):
        assert await account_on(lgw, await logged_in_as(lgw, name)) == patron.id
    lgw.session.cookie_jar.clear()
    assert (await login(lgw, other.pass_number, OTHER_PASSWORD)).status == 401
    # The absorbed username is free for somebody else.
    newcomer = await add_patron(pool, hasher, username=other.username)
    assert await account_on(lgw, await logged_in_as(lgw, other.username)) == newcomer.id
    record = await pool.fetchrow(
        "SELECT survivor::text, username, passes FROM account_merges WHERE absorbed = $1::uuid",
        other.id,
    )
    assert tuple(record.values()) == (patron.id, other.username, f"kb:{other.pass_number}")
    await settle(lgw)
    assert patron.email is not None and other.email is not None
    for address in (patron.email, other.email):
        mail = await mail_for(mail_catcher, address, "account_merged")
        assert other.username in plain_text(mail) and patron.username in plain_text(mail)


async def logged_in_as(client: Gateway, name: str, password: str = PASSWORD) -> str:
    client.session.cookie_jar.clear()
    assert (await login(client, name, password)).status == 303
    cookie = jar_cookie(client)
    assert cookie is not None
    return cookie


async def test_the_same_address_gets_one_notice(
    lgw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    other = await kb_patron(pool, hasher, email=patron.email.upper())
    await logged_in(lgw, patron)
    assert (await link(lgw, "kb", other.pass_number, OTHER_PASSWORD)).status == 303
    count = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE lower(recipient) = lower($1) AND subject LIKE"
        " 'Uw bibliotheekaccounts%'",
        patron.email,
    )
    assert count == 1


async def test_a_wrong_password_an_unknown_pass_and_a_free_pass_get_one_answer(
    lgw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    other = await kb_patron(pool, hasher)
    await logged_in(lgw, patron)
    answers = set()
    for institution, number, password in (
        ("kb", other.pass_number, "not the password"),
        ("kb", "KB-nobody-" + unique_pass_number(), OTHER_PASSWORD),
        ("kb", patron.pass_number, PASSWORD),  # the number exists, but not as a kb pass
    ):
        resp = await link(lgw, institution, number, password)
        assert resp.status == 403
        text = await resp.text()
        assert page_text("error.link.failed") in text
        answers.add(text.count(page_text("error.link.failed")))
    assert answers == {1}
    assert await Memberships(pool).of(patron.id) == (Membership("bib", patron.pass_number),)
    assert await Memberships(pool).holder("kb", other.pass_number) == other.id


async def test_guessing_a_pass_password_is_throttled(
    lgw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    other = await kb_patron(pool, hasher)
    await logged_in(lgw, patron)
    for attempt in range(5):
        assert (await link(lgw, "kb", other.pass_number, f"guess {attempt}")).status == 403
    blocked = await link(lgw, "kb", other.pass_number, OTHER_PASSWORD)
    assert blocked.status == 429
    assert int(blocked.headers["Retry-After"]) > 0
    assert await Memberships(pool).holder("kb", other.pass_number) == other.id


async def test_ones_own_pass_is_409_and_a_blocked_account_is_409(
    lgw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    await logged_in(lgw, patron)
    own = await link(lgw, "bib", patron.pass_number, PASSWORD)
    assert own.status == 409 and page_text("error.link.own") in await own.text()

    other = await kb_patron(pool, hasher)
    await Accounts(pool).set_disabled(other.id, True)
    blocked = await link(lgw, "kb", other.pass_number, OTHER_PASSWORD)
    assert blocked.status == 409 and page_text("error.link.blocked") in await blocked.text()
    assert await Memberships(pool).holder("kb", other.pass_number) == other.id

    unknown = await link(lgw, "oba", other.pass_number, OTHER_PASSWORD)
    assert unknown.status == 422


async def test_a_forged_form_links_nothing(
    lgw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    other = await kb_patron(pool, hasher)
    await logged_in(lgw, patron)
    resp = await lgw.post(
        "/auth/account/link",
        data={
            "csrf_token": "forged",
            "institution": "kb",
            "pass_number": other.pass_number,
            "password": OTHER_PASSWORD,
        },
        allow_redirects=False,
    )
    assert resp.status == 403
    assert await Memberships(pool).holder("kb", other.pass_number) == other.id


async def test_linking_needs_a_login(lgw: Gateway) -> None:
    lgw.session.cookie_jar.clear()
    resp = await lgw.post("/auth/account/link", data={}, allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"].startswith("/auth/login?next=")


async def _form_of(client: Gateway, cookie: str) -> str:
    resp = await fetch(client, "/auth/account", cookie, headers={"Accept": "text/html"})
    assert resp.status == 200
    return csrf_in(await resp.text())


async def _post_link(client: Gateway, cookie: str, token: str, pass_number: str) -> int:
    """The linking form from a browser of its own (no shared cookie jar)."""
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as browser,
        browser.post(
            client.make_url("/auth/account/link"),
            data={
                "csrf_token": token,
                "institution": "kb",
                "pass_number": pass_number,
                "password": OTHER_PASSWORD,
            },
            headers={"Cookie": f"{COOKIE}={cookie}"},
            allow_redirects=False,
        ) as resp,
    ):
        return resp.status


async def test_two_merges_of_one_pass_at_once_make_one_winner(
    lgw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Two patrons who both know the other pass's password link it at the same moment:
    exactly one gets it, whole; neither deadlocks."""
    first, second = await add_patron(pool, hasher), await add_patron(pool, hasher)
    other = await kb_patron(pool, hasher)
    await Memberships(pool).add(other.id, Membership("kb", other.pass_number + "-2"))
    cookies = [await logged_in(lgw, first), await logged_in(lgw, second)]
    tokens = [await _form_of(lgw, cookie) for cookie in cookies]
    statuses = await asyncio.gather(
        *(_post_link(lgw, c, t, other.pass_number) for c, t in zip(cookies, tokens, strict=True))
    )
    assert sorted(statuses)[0] == 303 and sorted(statuses)[1] in (403, 409), statuses
    winner, loser = (first, second) if statuses[0] == 303 else (second, first)
    memberships = Memberships(pool)
    assert {m.pass_number for m in await memberships.of(winner.id)} == {
        winner.pass_number,
        other.pass_number,
        other.pass_number + "-2",
    }
    assert await memberships.of(loser.id) == (Membership("bib", loser.pass_number),)
    assert await memberships.of(other.id) == ()
    assert (
        await pool.fetchval("SELECT merged_into::text FROM accounts WHERE id = $1::uuid", other.id)
        == winner.id
    )
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM account_merges WHERE absorbed = $1::uuid", other.id
        )
        == 1
    )


async def test_a_merge_racing_a_login_of_the_absorbed_account_leaves_it_no_session(
    lgw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    other = await kb_patron(pool, hasher)
    cookie = await logged_in(lgw, patron)
    token = await _form_of(lgw, cookie)
    # A browser of its own, keeping cookies for 127.0.0.1 (unsafe: an IP address).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        page = await browser.get(lgw.make_url("/auth/login"))
        login_token = csrf_in(await page.text())

        async def log_in_as_other() -> str | None:
            async with browser.post(
                lgw.make_url("/auth/login"),
                data={
                    "csrf_token": login_token,
                    "username": other.username,
                    "password": OTHER_PASSWORD,
                },
                allow_redirects=False,
            ) as resp:
                assert resp.status in (303, 401)
                got = resp.cookies.get(COOKIE)
                return got.value if resp.status == 303 and got is not None else None

        merged, other_cookie = await asyncio.gather(
            _post_link(lgw, cookie, token, other.pass_number), log_in_as_other()
        )
    assert merged == 303
    if other_cookie is not None:
        assert await account_on(lgw, other_cookie) is None
    live = await pool.fetchval(
        "SELECT count(*) FROM sessions s JOIN accounts a ON a.id = s.account_id"
        " WHERE s.account_id = $1::uuid AND s.revoked_at IS NULL AND NOT a.disabled",
        other.id,
    )
    assert live == 0


async def test_a_password_changed_between_the_proof_and_the_merge_stops_the_merge(
    lgw: Gateway, pool: asyncpg.Pool, hasher: PausingHasher
) -> None:
    """The pass's owner changes its password (say, worried about a leak) while somebody who
    knew the old one is linking it: the old password proves nothing any more, and the pass
    stays its owner's."""
    patron = await add_patron(pool, hasher)
    other = await kb_patron(pool, hasher)
    cookie = await logged_in(lgw, patron)
    token = await _form_of(lgw, cookie)
    reached, go_on = hasher.pause_next_check()
    linking = asyncio.ensure_future(_post_link(lgw, cookie, token, other.pass_number))
    await reached.wait()  # the old password's hash is read; its check is about to run
    assert await Accounts(pool).set_password_hash(other.id, await hasher.hash("a brand new one"))
    go_on.set()
    assert await linking == 403
    assert await Memberships(pool).holder("kb", other.pass_number) == other.id
    assert await Memberships(pool).of(patron.id) == (Membership("bib", patron.pass_number),)
    assert await pool.fetchval(
        "SELECT merged_into IS NULL AND NOT disabled FROM accounts WHERE id = $1::uuid", other.id
    )


async def test_the_account_page_lists_the_passes_with_their_dates_and_renewal(
    lgw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    today = datetime.now(ZONE).date()
    soon, gone, later = today + timedelta(days=10), today - timedelta(days=1), date(2099, 1, 31)
    memberships = Memberships(pool)
    await memberships.add(
        patron.id, Membership("kb", "KB-SOON-" + patron.pass_number, "adult", soon)
    )
    await memberships.add(patron.id, Membership("oba", "OBA-" + patron.pass_number, "youth", gone))
    await memberships.add(
        patron.id, Membership("kb", "KB-LATER-" + patron.pass_number, None, later)
    )
    await logged_in(lgw, patron)
    page = await (await lgw.get("/auth/account")).text()
    assert "KB-SOON-" in page and "OBA-" in page and "KB-LATER-" in page
    assert page.count('href="https://www.kb.nl/lid-worden"') == 1  # the soon one only
    assert f'datetime="{soon.isoformat()}"' in page
    assert "verlopen op" in page and "oba" in page  # an id no longer in force, as it is
    assert "geldig tot en met 31 januari 2099" in page
    assert page_text("passes.no_end") in page  # the patron's own pass has no end date
    assert 'name="institution"' in page and '<label for="link_institution">' in page
