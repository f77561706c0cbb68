"""Changing the username (and the password) from a logged-in session: the current password is
the lock, it may not be guessed here instead of at the login, and the new name must not be a
way to impersonate, inject or confuse anybody downstream.
"""

from __future__ import annotations

import asyncpg
import pytest
from aiohttp import ClientResponse

from auth.credentials.passwords import PasswordHasher
from auth.store.accounts import Account, Accounts
from tests.helpers import (
    PASSWORD,
    Gateway,
    MakeGateway,
    add_patron,
    attempt,
    form_token,
    ledger,
    login,
    post_form,
    routes_for,
    unique_pass_number,
)
from tests.security.wire import Received, RecordingBackend


@pytest.fixture
async def gw(make_gateway: MakeGateway, recorder: RecordingBackend) -> Gateway:
    return await make_gateway(routes_for(recorder.port))


async def signed_in(gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher) -> Account:
    patron = await add_patron(pool, hasher, username=f"reader{unique_pass_number()}")
    gw.session.cookie_jar.clear()
    assert (await login(gw, patron.username)).status == 303
    return patron


async def post_account(gw: Gateway, path: str, fields: dict[str, str]) -> ClientResponse:
    token = await form_token(gw, "/auth/account")
    return await post_form(gw, path, {"csrf_token": token, **fields})


async def rename(gw: Gateway, new: str, password: str = PASSWORD, **extra: str) -> ClientResponse:
    return await post_account(
        gw, "/auth/account/username", {"new_username": new, "password": password, **extra}
    )


async def username_of(pool: asyncpg.Pool, patron: Account) -> str:
    found = await Accounts(pool).by_id(patron.id)
    assert found is not None
    return found.username


async def backend_sees(gw: Gateway, recorder: RecordingBackend) -> Received:
    recorder.requests.clear()
    resp = await gw.get("/reservations/mine", headers={"Accept": "application/json"})
    assert resp.status == 200
    [seen] = recorder.requests
    return seen


FORMS = [
    pytest.param(
        "/auth/account/username",
        "password",
        {"new_username": "renamed{n}"},
        id="username-form-ASVS-3.7.1",
    ),
    pytest.param(
        "/auth/account/password",
        "current_password",
        {"new_password": "a lantern in the stacks"},
        id="password-form-ASVS-2.1.6",
    ),
]


@pytest.mark.parametrize(("path", "field", "fields"), FORMS)
async def test_the_current_password_cannot_be_guessed_here_instead_of_at_the_login(
    gw: Gateway,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    path: str,
    field: str,
    fields: dict[str, str],
) -> None:
    """Somebody at an unlocked, logged-in computer gets no more guesses at the password on
    the account page than at the login form: the same counter, the same block (ASVS 2.2.1)."""
    patron = await signed_in(gw, pool, hasher)
    form = {key: value.format(n=unique_pass_number()) for key, value in fields.items()}
    statuses = []
    for n in range(6):
        resp = await post_account(gw, path, {**form, field: f"guess {n}"})
        statuses.append(resp.status)
    assert statuses == [403] * 5 + [429]
    blocked = await post_account(gw, path, {**form, field: PASSWORD})
    assert blocked.status == 429
    assert blocked.headers["Retry-After"].isdigit()
    assert await username_of(pool, patron) == patron.username
    assert (await ledger(pool))[f"account:{patron.id}"] == 5
    # The block is the account's, so the login form is shut as well.
    assert (await attempt(gw, patron.username, PASSWORD))[0] == 429


@pytest.mark.parametrize(
    "password",
    [
        pytest.param("", id="empty-ASVS-3.7.1"),
        pytest.param("x" * 2000, id="oversized-ASVS-3.7.1"),
    ],
)
async def test_a_rename_without_the_right_password_changes_nothing(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, password: str
) -> None:
    """A stolen session alone must not be enough to take over the login name (ASVS 3.7.1)."""
    patron = await signed_in(gw, pool, hasher)
    resp = await rename(gw, f"taken{unique_pass_number()}", password)
    assert resp.status == 403
    assert await username_of(pool, patron) == patron.username


async def test_a_recycled_username_never_inherits_the_old_owners_identity(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, recorder: RecordingBackend
) -> None:
    """When A gives up a name and B takes it, backends keyed on the stable user id keep A's
    data with A, and A's live session stays A's (ASVS 4.1.2, 4.2.1)."""
    first = await signed_in(gw, pool, hasher)
    first_cookie = gw.session.cookie_jar.filter_cookies(gw.make_url("/"))
    old_name = first.username
    assert (await rename(gw, f"moved{unique_pass_number()}")).status == 303
    second = await add_patron(pool, hasher, password="another long secret")
    await Accounts(pool).set_username(second.id, old_name)
    # The first patron's session still belongs to the first patron.
    gw.session.cookie_jar.clear()
    gw.session.cookie_jar.update_cookies(first_cookie)
    seen = await backend_sees(gw, recorder)
    assert seen.all("X-Library-User-Id") == [first.id]
    # The old name now opens only the new owner's account, with the new owner's password.
    assert (await attempt(gw, old_name, PASSWORD))[0] == 401
    assert (await attempt(gw, old_name, "another long secret"))[0] == 303
    seen = await backend_sees(gw, recorder)
    assert seen.all("X-Library-User-Id") == [second.id]
    assert seen.all("X-Library-Username") == [old_name]


async def test_extra_fields_in_the_rename_form_change_nothing_else(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Mass assignment (ASVS 5.1.2): only the username of the session's own account can
    change, whatever ids, pass numbers or flags are added to the form."""
    patron = await signed_in(gw, pool, hasher)
    other = await add_patron(pool, hasher)
    wanted = f"chosen{unique_pass_number()}"
    resp = await rename(
        gw,
        wanted,
        id=other.id,
        user_id=other.id,
        account_id=other.id,
        pass_number="1",
        email="attacker@example.org",
        disabled="false",
    )
    assert resp.status == 303
    mine = await Accounts(pool).by_id(patron.id)
    theirs = await Accounts(pool).by_id(other.id)
    assert mine is not None and theirs is not None
    assert (mine.username, mine.pass_number, mine.email) == (
        wanted,
        patron.pass_number,
        patron.email,
    )
    assert (theirs.username, theirs.pass_number, theirs.email) == (
        other.username,
        other.pass_number,
        other.email,
    )


@pytest.mark.parametrize(
    ("name", "status"),
    [
        pytest.param("evil\r\nX-Library-User-Id: 1", 422, id="CRLF-header-injection-ASVS-5.3.1"),
        pytest.param("evil\nname", 422, id="LF-ASVS-5.3.1"),
        pytest.param("evil\u2028name", 422, id="line-separator-ASVS-5.3.1"),
        pytest.param("admin\u202egnp.exe", 422, id="bidi-override-ASVS-5.1.3"),
        pytest.param("ad\u200bmin", 422, id="zero-width-space-ASVS-5.1.3"),
        # For a backend that prints X-Library-Username without escaping it: markup, quotes
        # that end an attribute or a string, and the separators of headers, cookies, paths.
        pytest.param("<script>alert(1)</script>", 422, id="markup-ASVS-5.3.3"),
        pytest.param('x" onmouseover="alert(1)', 422, id="double-quote-ASVS-5.3.3"),
        pytest.param("o'brien", 422, id="single-quote-ASVS-5.3.3"),
        pytest.param("x`alert(1)`", 422, id="backtick-ASVS-5.3.3"),
        pytest.param("ann&amp;co", 422, id="ampersand-ASVS-5.3.3"),
        pytest.param("sid=forged;path", 422, id="cookie-separators-ASVS-5.3.1"),
        pytest.param("../../admin", 422, id="path-climb-ASVS-5.3.1"),
        pytest.param("a\\b%2fc", 422, id="backslash-percent-ASVS-5.3.1"),
        pytest.param("\uff1cscript\uff1e", 422, id="full-width-markup-ASVS-5.1.3"),
        # A NUL makes the whole form unreadable: refused before any username rule is asked.
        pytest.param("evil\x00name", 400, id="NUL-ASVS-5.1.3"),
    ],
)
async def test_a_name_that_could_inject_or_deceive_is_refused(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, name: str, status: int
) -> None:
    """The username travels into an HTTP header, a JWT, mails and pages; control, line
    separator and invisible characters, markup, quotes and separators are refused (422,
    against the rules) rather than left to every backend to escape."""
    patron = await signed_in(gw, pool, hasher)
    resp = await rename(gw, name)
    assert resp.status == status
    assert await username_of(pool, patron) == patron.username


async def test_a_non_ascii_name_reaches_the_backend_percent_encoded(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, recorder: RecordingBackend
) -> None:
    """Header values are bytes without a charset: the gateway percent-encodes everything
    outside printable ASCII so no backend decodes it wrongly (ASVS 5.3.1, 5.3.2)."""
    await signed_in(gw, pool, hasher)
    wanted = f"J\u00f6ns-\u6771\u4eac{unique_pass_number()}"
    assert (await rename(gw, wanted)).status == 303
    [header] = (await backend_sees(gw, recorder)).all("X-Library-Username")
    assert header.isascii()
    assert header == wanted.replace("\u00f6", "%C3%B6").replace(
        "\u6771\u4eac", "%E6%9D%B1%E4%BA%AC"
    )


async def test_markup_in_a_username_is_escaped_on_the_account_page(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Stored XSS through the one field a patron controls (ASVS 5.3.3): refused as a new
    name, escaped where it is echoed, and escaped where a name from before the character
    rules is still shown."""
    patron = await signed_in(gw, pool, hasher)
    wanted = f"<script>alert({unique_pass_number()})</script>"
    refused = await rename(gw, wanted)
    assert refused.status == 422
    page = await refused.text()
    assert wanted not in page
    assert wanted.replace("<", "&lt;").replace(">", "&gt;") in page
    assert await username_of(pool, patron) == patron.username

    # Stored as it could have been before the rules, bypassing them.
    await Accounts(pool).set_username(patron.id, wanted)
    page = await (await gw.get("/auth/account")).text()
    assert wanted not in page
    assert f"<dd>{wanted.replace('<', '&lt;').replace('>', '&gt;')}</dd>" in page
    assert "(&lt; &gt; ( ) /)" in page  # the notice names the characters, escaped too
