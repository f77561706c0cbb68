"""The login and logout pages through the whole gateway: who gets in, where they are sent, and
what a failed, forged or cross-site attempt leaves behind."""

from __future__ import annotations

import codecs
import html
import re
from pathlib import Path

import asyncpg
import pytest
from passlib.hash import md5_crypt

from auth.credentials.passwords import PasswordHasher, wrap_legacy
from auth.pages import i18n
from auth.store.accounts import Accounts, UsernameTaken
from tests.helpers import (
    COOKIE,
    PASSWORD,
    Gateway,
    account_on,
    add_patron,
    form_token,
    jar_cookie,
    login,
    page_text,
    post_form,
    set_cookies,
    unique_pass_number,
)

CORPUS = Path(__file__).parent / "data" / "open_redirects.txt"
FAILED = html.escape(i18n.translator("en")["login.failed"])


# --- Who gets in ------------------------------------------------------------------------------


async def test_login_by_username_sends_to_next_with_a_fresh_cookie_against_fixation(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    token = await form_token(gw)
    anonymous = jar_cookie(gw)
    assert anonymous is not None
    resp = await post_form(
        gw,
        "/auth/login",
        {
            "csrf_token": token,
            "username": patron.username,
            "password": PASSWORD,
            "next": "/catalogue/search?q=rembrandt",
        },
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/catalogue/search?q=rembrandt"
    fresh = jar_cookie(gw)
    assert fresh is not None and fresh != anonymous
    assert await account_on(gw, fresh) == patron.id
    # A cookie an attacker planted before the login stays anonymous after it, and the CSRF
    # token the attacker read from that anonymous session does not work in the new one.
    assert await account_on(gw, anonymous) is None
    gw.session.cookie_jar.update_cookies({COOKIE: fresh})
    assert await form_token(gw, "/auth/logout") != token
    assert (await post_form(gw, "/auth/logout", {"csrf_token": token})).status == 403
    assert await account_on(gw, fresh) == patron.id


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@pytest.mark.parametrize(
    "spelling",
    [
        "pass_number",
        "pass_number_full_width",
        "username_upper",
        "username_full_width",
        "username_padded",
    ],
)
async def test_login_accepts_every_spelling_of_the_same_name(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, spelling: str
) -> None:
    patron = await add_patron(pool, hasher, username=f"Reader.{unique_pass_number()}")
    name = {
        "pass_number": patron.pass_number,
        "pass_number_full_width": _full_width(patron.pass_number),
        "username_upper": patron.username.upper(),
        "username_full_width": _full_width(patron.username.lower()),
        "username_padded": f"  {patron.username}  ",
    }[spelling]
    resp = await login(gw, name)
    assert resp.status == 303
    assert resp.headers["Location"] == "/"
    assert await account_on(gw, jar_cookie(gw)) == patron.id


async def test_pass_number_keeps_working_after_a_username_is_chosen_and_is_not_shadowed(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    owner = await add_patron(pool, hasher, username=f"owner{unique_pass_number()}")
    other = await add_patron(
        pool, hasher, password="another long secret", username=f"other{unique_pass_number()}"
    )
    resp = await login(gw, owner.pass_number)
    assert resp.status == 303
    assert await account_on(gw, jar_cookie(gw)) == owner.id
    # Another patron's password with the owner's pass number does not open either account.
    gw.session.cookie_jar.clear()
    assert (await login(gw, owner.pass_number, "another long secret")).status == 401
    # Nobody can take the owner's pass number as a username and so capture its logins.
    with pytest.raises(UsernameTaken):
        await Accounts(pool).set_username(other.id, owner.pass_number)
    with pytest.raises(UsernameTaken):
        await add_patron(pool, hasher, username=owner.pass_number)


async def test_login_replaces_a_weak_legacy_hash_with_argon2id(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    legacy = wrap_legacy(md5_crypt.hash("imported from the old system"))
    patron = await add_patron(pool, hasher, password_hash=legacy)
    resp = await login(gw, patron.username, "imported from the old system")
    assert resp.status == 303
    stored = await pool.fetchval(
        "SELECT password_hash FROM accounts WHERE id = $1::uuid", patron.id
    )
    assert stored.startswith("$argon2id$")
    gw.session.cookie_jar.clear()
    assert (await login(gw, patron.username, "imported from the old system")).status == 303


# --- Failed logins look alike -------------------------------------------------------------------


def _comparable(page: str, name: str) -> str:
    """The failure page without what legitimately differs between two attempts: the CSRF
    token, the style nonce and the name the patron typed (echoed back into the field)."""
    page = re.sub(r'name="csrf_token" value="[^"]*"', 'name="csrf_token" value=""', page)
    page = re.sub(r'nonce="[^"]*"', 'nonce=""', page)
    return page.replace(f'value="{html.escape(name)}"', 'value="NAME"')


async def _failed_attempt(client: Gateway, name: str, password: str) -> tuple[int, str]:
    client.session.cookie_jar.clear()
    token = await form_token(client, "/auth/login?lang=en")
    resp = await post_form(
        client,
        "/auth/login",
        {
            "csrf_token": token,
            "username": name,
            "password": password,
        },
    )
    page = await resp.text()
    assert page.count('class="error"') == 1
    assert FAILED in page
    assert await account_on(client, jar_cookie(client)) is None
    return resp.status, _comparable(page, name)


async def test_unknown_name_wrong_password_and_disabled_account_fail_identically(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Defends against account enumeration through the login's answer."""
    patron = await add_patron(pool, hasher)
    disabled = await add_patron(pool, hasher)
    await pool.execute("UPDATE accounts SET disabled = true WHERE id = $1::uuid", disabled.id)
    unknown = await _failed_attempt(gw, f"nobody{unique_pass_number()}", PASSWORD)
    wrong = await _failed_attempt(gw, patron.username, PASSWORD + "!")
    blocked = await _failed_attempt(gw, disabled.username, PASSWORD)
    assert unknown[0] == wrong[0] == blocked[0] == 401
    assert unknown[1] == wrong[1] == blocked[1]


@pytest.mark.parametrize(
    ("name", "password"),
    [
        ("", PASSWORD),
        ("someone", ""),
        ("", ""),
        ("   ", PASSWORD),
        ("someone", "x" * 2000),
        ("n" * 2000, PASSWORD),
    ],
)
async def test_empty_or_oversized_fields_fail_like_any_other_login(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, name: str, password: str
) -> None:
    """Defends against a crash (500) or a different answer on odd input."""
    patron = await add_patron(pool, hasher)
    # A real patron's name stands in for "someone", so the password meets a real account.
    actual = patron.username if name == "someone" else name
    status, _ = await _failed_attempt(gw, actual, password)
    assert status == 401


# --- Where a login may send the patron ----------------------------------------------------------


def _attacks() -> list[str]:
    attacks = []
    for line in CORPUS.read_text(encoding="ascii").splitlines():
        if line and not line.startswith("# "):
            attacks.append(codecs.decode(line, "unicode_escape"))
    return attacks


# One per technique in the corpus; each must also be in the corpus, so the two cannot drift.
REDIRECT_ATTACKS = [
    "https://evil.com",
    "javascript:alert(1)",
    "//evil.com",
    "///evil.com",
    "//evil.com@library.example/",
    "/\\evil.com",
    "\\\\evil.com",
    "/\t/evil.com",
    "/%09/evil.com",
    "/%2f/evil.com",
    "/%5cevil.com",
    "/%252f/evil.com",
    "/..//evil.com",
    "/https://evil.com",
    "/\uff0fevil.com",
    "/catalogue?q=%0d%0aSet-Cookie:x=y",
    "/auth/logout",
    max(_attacks(), key=len),  # the corpus's over-long path
]


def test_the_login_redirect_cases_come_from_the_corpus() -> None:
    corpus = set(_attacks())
    assert [attack for attack in REDIRECT_ATTACKS if attack not in corpus] == []


@pytest.mark.parametrize("attack", REDIRECT_ATTACKS, ids=ascii)
async def test_login_never_redirects_off_site(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, attack: str
) -> None:
    """Defends against the login page as an open redirect (CWE-601)."""
    patron = await add_patron(pool, hasher)
    resp = await login(gw, patron.username, next=attack)
    assert resp.status == 303
    assert resp.headers["Location"] == "/"


async def test_a_local_next_is_kept_with_its_query(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    resp = await login(gw, patron.username, next="/reservations/mine?sort=date&page=2")
    assert resp.status == 303
    assert resp.headers["Location"] == "/reservations/mine?sort=date&page=2"


async def test_the_form_carries_only_a_safe_next(gw: Gateway) -> None:
    page = await (await gw.get("/auth/login", params={"next": "//evil.com"})).text()
    assert 'name="next" value="/"' in page
    assert "evil.com" not in page


# --- CSRF -----------------------------------------------------------------------------------


async def test_login_without_a_csrf_token_is_refused(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    await form_token(gw)
    resp = await post_form(gw, "/auth/login", {"username": patron.username, "password": PASSWORD})
    assert resp.status == 403
    assert await account_on(gw, jar_cookie(gw)) is None


async def test_login_with_another_sessions_csrf_token_is_refused(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Defends against login CSRF: the attacker's own token does not fit the victim's
    session."""
    patron = await add_patron(pool, hasher)
    attackers_token = await form_token(gw)
    gw.session.cookie_jar.clear()
    victims_token = await form_token(gw)
    assert victims_token != attackers_token
    resp = await post_form(
        gw,
        "/auth/login",
        {
            "csrf_token": attackers_token,
            "username": patron.username,
            "password": PASSWORD,
        },
    )
    assert resp.status == 403
    assert await account_on(gw, jar_cookie(gw)) is None


async def test_login_with_a_token_but_no_session_cookie_is_refused(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    token = await form_token(gw)
    gw.session.cookie_jar.clear()
    resp = await post_form(
        gw,
        "/auth/login",
        {
            "csrf_token": token,
            "username": patron.username,
            "password": PASSWORD,
        },
    )
    assert resp.status == 403
    assert await account_on(gw, jar_cookie(gw)) is None


async def test_logout_without_a_csrf_token_is_refused_and_the_session_lives(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Defends against a cross-site forced logout."""
    patron = await add_patron(pool, hasher)
    await login(gw, patron.username)
    cookie = jar_cookie(gw)
    resp = await post_form(gw, "/auth/logout", {})
    assert resp.status == 403
    assert await account_on(gw, cookie) == patron.id


async def test_a_bare_post_to_logout_is_refused_with_the_csrf_page_and_the_session_lives(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """A cross-site forced logout needs no form at all: a POST with no body and no
    Content-Type (what `curl -X POST` or `navigator.sendBeacon` send) carries no token, so
    it gets the same 403 as any form without one, not a 400 (found by review)."""
    patron = await add_patron(pool, hasher)
    await login(gw, patron.username)
    cookie = jar_cookie(gw)
    resp = await gw.post("/auth/logout", allow_redirects=False)
    assert resp.status == 403
    assert page_text("csrf.title") in await resp.text()
    assert await account_on(gw, cookie) == patron.id


async def test_get_on_logout_only_asks_and_changes_nothing(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    await login(gw, patron.username)
    cookie = jar_cookie(gw)
    resp = await gw.get("/auth/logout", allow_redirects=False)
    assert resp.status == 200
    assert patron.username in await resp.text()
    assert set_cookies(resp) == []
    assert await account_on(gw, cookie) == patron.id


async def test_logout_with_its_token_ends_the_session_and_clears_the_cookie(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    await login(gw, patron.username)
    cookie = jar_cookie(gw)
    token = await form_token(gw, "/auth/logout")
    resp = await post_form(gw, "/auth/logout", {"csrf_token": token})
    assert resp.status == 303
    assert resp.headers["Location"] == "/auth/login"
    assert any(m.value == "" or m["max-age"] == "0" for m in set_cookies(resp))
    assert await account_on(gw, cookie) is None


LOGGED_OUT = {
    lang: html.escape(i18n.translator(lang)["login.notice.logged_out"]) for lang in ("nl", "en")
}


async def log_out(gw: Gateway) -> None:
    token = await form_token(gw, "/auth/logout")
    resp = await post_form(gw, "/auth/logout", {"csrf_token": token})
    assert resp.status == 303
    assert resp.headers["Location"] == "/auth/login"


@pytest.mark.parametrize("lang", ["nl", "en"])
async def test_after_logout_the_login_page_says_so_once(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, lang: str
) -> None:
    patron = await add_patron(pool, hasher)
    await login(gw, patron.username)
    await log_out(gw)
    page = await gw.get("/auth/login", headers={"Accept-Language": lang})
    assert LOGGED_OUT[lang] in await page.text()
    again = await gw.get("/auth/login", headers={"Accept-Language": lang})
    assert LOGGED_OUT[lang] not in await again.text()


async def test_the_logged_out_notice_cannot_be_summoned_by_a_link(gw: Gateway) -> None:
    """No query parameter makes the login page say "logged out" (or anything it was given):
    the word comes only after a logout in this browser."""
    for query in ("?notice=logged_out", "?notice=login.notice.logged_out", "?logged_out=1"):
        text = await (await gw.get("/auth/login" + query)).text()
        assert LOGGED_OUT["nl"] not in text, query


async def test_a_logged_in_browser_is_never_told_it_is_logged_out(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Logged out and straight back in, the login page unseen in between: the login page,
    opened while logged in, does not claim otherwise."""
    patron = await add_patron(pool, hasher)
    await login(gw, patron.username)
    await log_out(gw)
    token = await form_token(gw, "/auth/forgot-password")
    fields = {"csrf_token": token, "username": patron.username, "password": PASSWORD}
    assert (await post_form(gw, "/auth/login", fields)).status == 303
    assert LOGGED_OUT["nl"] not in await (await gw.get("/auth/login")).text()


# --- Headers of the /auth/ pages --------------------------------------------------------------


async def test_auth_pages_are_never_cached_framed_or_leak_a_referrer(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Defends against clickjacking the login, cached login pages and tokens in Referer."""
    patron = await add_patron(pool, hasher)
    answers = [await gw.get("/auth/login")]
    answers.append(await post_form(gw, "/auth/login", {"csrf_token": "wrong"}))
    answers.append(await login(gw, patron.username, "not the password"))
    answers.append(await login(gw, patron.username))
    answers.append(await gw.get("/auth/logout"))
    for resp in answers:
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert [resp.status for resp in answers] == [200, 403, 401, 303, 200]
