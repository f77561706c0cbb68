"""The account page through the whole gateway: changing the username and the password, what
each change does to logins, sessions and identity headers, and every way a change is refused."""

from __future__ import annotations

import asyncpg
import markupsafe
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestServer
from yarl import URL

from auth.credentials.passwords import PasswordHasher
from auth.mail import SmtpTransport
from auth.pages import i18n
from auth.store.accounts import Account, Accounts
from gateway.demo.mailcatcher import MailCatcher
from tests.helpers import (
    PASSWORD,
    Gateway,
    MakeGateway,
    account_on,
    add_patron,
    can_log_in,
    fetch,
    form_token,
    identity_seen,
    jar_cookie,
    login,
    mail_for,
    outbox_for,
    page_text,
    plain_text,
    post_form,
    routes_for,
    unique_pass_number,
)

NEW_PASSWORD = "a lantern in the stacks"
# No Accept-Language and no lang cookie: pages and mails are in the default language.
T = i18n.translator(i18n.DEFAULT)


@pytest.fixture
def gw(mailing_gw: Gateway) -> Gateway:
    return mailing_gw


reason = page_text


def full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


async def signed_in(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, **patron: str
) -> Account:
    """A new patron, logged in through the real form in `gw`'s cookie jar."""
    account = await add_patron(pool, hasher, **patron)
    assert (await login(gw, account.username)).status == 303
    return account


async def post_account(gw: Gateway, path: str, fields: dict[str, str]) -> ClientResponse:
    """Post one of the account page's forms with the CSRF token the page gave out."""
    token = await form_token(gw, "/auth/account")
    return await post_form(gw, path, {"csrf_token": token, **fields})


async def change_username(gw: Gateway, new_username: str, password: str) -> ClientResponse:
    return await post_account(
        gw, "/auth/account/username", {"new_username": new_username, "password": password}
    )


async def change_password(gw: Gateway, current: str, new: str) -> ClientResponse:
    return await post_account(
        gw, "/auth/account/password", {"current_password": current, "new_password": new}
    )


async def backend_sees(gw: Gateway) -> dict[str, str]:
    """The identity headers a required route's backend gets for the jar's session."""
    resp = await gw.get(
        "/reservations/mine", headers={"Accept": "application/json"}, allow_redirects=False
    )
    assert resp.status == 200
    return identity_seen(await resp.json())


async def stored(pool: asyncpg.Pool, account: Account) -> Account:
    found = await Accounts(pool).by_id(account.id)
    assert found is not None
    return found


# --- Changing the username --------------------------------------------------------------------


async def test_username_change_renames_the_login_but_keeps_the_account_and_tells_the_patron(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, mail_catcher: MailCatcher
) -> None:
    """Defends against a rename that loses the pass-number login, leaves the old name working,
    changes the stable user id, lingers in the identity headers, or goes unnoticed by the
    patron whose account was renamed."""
    patron = await signed_in(gw, pool, hasher)
    assert patron.email is not None
    before = await backend_sees(gw)
    new_name = f"Lezer.{unique_pass_number()}"
    resp = await change_username(gw, new_name, PASSWORD)
    assert resp.status == 303
    assert resp.headers["Location"] == "/auth/account"
    # The same session sees the new name at once: no stale cache on this instance.
    after = await backend_sees(gw)
    assert after["x-library-user-id"] == before["x-library-user-id"] == patron.id
    assert before["x-library-username"] == patron.username
    assert after["x-library-username"] == new_name
    page = await (await gw.get("/auth/account")).text()
    assert reason("account.saved.username") in page
    assert f"<dd>{new_name}</dd>" in page
    mail = await mail_for(mail_catcher, patron.email, "username_changed")
    assert patron.username in plain_text(mail) and new_name in plain_text(mail)

    assert not await can_log_in(gw, patron.username)
    assert await can_log_in(gw, new_name)
    assert await can_log_in(gw, new_name.upper())
    assert await can_log_in(gw, patron.pass_number)
    assert (await backend_sees(gw))["x-library-user-id"] == patron.id


async def test_username_change_with_a_wrong_current_password_changes_nothing(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Defends against somebody at an unattended, logged-in browser renaming the account."""
    patron = await signed_in(gw, pool, hasher)
    assert patron.email is not None
    for wrong in ("not the password at all", ""):
        resp = await change_username(gw, f"Kaper.{unique_pass_number()}", wrong)
        assert resp.status == 403
        page = await resp.text()
        assert reason("error.wrong_password") in page
        assert 'action="/auth/account/username"' in page
    assert (await stored(pool, patron)).username == patron.username
    assert await outbox_for(pool, patron.email) == []
    assert await can_log_in(gw, patron.username)


@pytest.mark.parametrize("spelling", ["exact", "other_case", "full_width", "pass_number"])
async def test_a_taken_username_in_any_spelling_is_refused_with_409(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, spelling: str
) -> None:
    """Defends against two accounts answering to one name, or a username that captures the
    logins meant for another patron's pass number."""
    # A pass number the default pattern does not read as one (old imported cards have
    # letters), so only uniqueness, not the pass-number rule, can stop its capture.
    other = await add_patron(
        pool,
        hasher,
        username=f"Bezet.{unique_pass_number()}",
        pass_number=f"P{unique_pass_number()}",
    )
    wanted = {
        "exact": other.username,
        "other_case": other.username.swapcase(),
        "full_width": full_width(other.username.lower()),
        "pass_number": other.pass_number.lower(),
    }[spelling]
    patron = await signed_in(gw, pool, hasher)
    resp = await change_username(gw, wanted, PASSWORD)
    assert resp.status == 409
    assert reason("error.username_taken") in await resp.text()
    assert (await stored(pool, patron)).username == patron.username
    assert (await stored(pool, other)).username == other.username
    assert await can_log_in(gw, other.pass_number, PASSWORD)
    assert (await backend_sees(gw))["x-library-user-id"] == other.id


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("too_short", "length"),
        ("too_long", "length"),
        ("zero_width_space", "characters"),
        ("markup", "characters"),
        ("quote", "characters"),
        ("signs_alone", "no_letter_or_digit"),
        ("combining_mark_first", "combining_mark"),
        ("looks_like_a_pass_number", "pass_number"),
        ("full_width_digits_of_another_pass_number", "pass_number"),
    ],
)
async def test_a_username_against_the_rules_is_refused_with_422_and_the_reason(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, case: str, error: str
) -> None:
    """Defends against invisible look-alike names, names that carry markup or quotes to a
    backend that forgets to escape them, and names that could be read as somebody else's pass
    number at the login form."""
    other = await add_patron(pool, hasher)
    wanted = {
        "too_short": "ab",
        "too_long": "a" * 65,
        "zero_width_space": "lezer\u200bjan",
        "markup": "<script>",
        "quote": "o'brien",
        "signs_alone": "...",
        "combining_mark_first": "\u0301lezer",
        "looks_like_a_pass_number": unique_pass_number(),
        "full_width_digits_of_another_pass_number": full_width(other.pass_number),
    }[case]
    patron = await signed_in(gw, pool, hasher)
    resp = await change_username(gw, wanted, PASSWORD)
    assert resp.status == 422
    assert reason(f"error.username.{error}") in await resp.text()
    assert (await stored(pool, patron)).username == patron.username


@pytest.mark.parametrize("typed", ["ascii", "full_width"])
async def test_going_back_to_ones_own_pass_number_as_username_is_allowed(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, typed: str
) -> None:
    """Defends against the pass-number rule locking patrons out of the default username."""
    patron = await signed_in(gw, pool, hasher)
    wanted = patron.pass_number if typed == "ascii" else full_width(patron.pass_number)
    resp = await change_username(gw, wanted, PASSWORD)
    assert resp.status == 303
    assert (await stored(pool, patron)).username == patron.pass_number
    assert (await backend_sees(gw))["x-library-username"] == patron.pass_number
    assert not await can_log_in(gw, patron.username)
    assert await can_log_in(gw, patron.pass_number)


TWO_LIBRARIES = """\
institutions:
  - id: bib
    name: De Bibliotheek
    default: true
  - id: kb
    name: Koninklijke Bibliotheek
"""
OTHER_PASSWORD = "another library's own password"


async def test_a_pass_number_linked_from_another_library_may_become_the_username(
    make_gateway: MakeGateway,
    backend: TestServer,
    mail_catcher: MailCatcher,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
) -> None:
    """After linking a second library's pass (the other account merged in), each of the
    patron's pass numbers is their own, not just the first; somebody else's still is not."""
    lgw = await make_gateway(
        routes_for(backend.port),
        institutions=TWO_LIBRARIES,
        mail_transport=SmtpTransport(mail_catcher.url),
    )
    patron = await signed_in(lgw, pool, hasher)
    linked_number = unique_pass_number()
    await Accounts(pool).add(
        pass_number=linked_number,
        email=f"kb{linked_number}@example.org",
        username=f"kb-reader-{linked_number}",
        password_hash=await hasher.hash(OTHER_PASSWORD),
        institution="kb",
    )
    stranger = await add_patron(pool, hasher)
    linked = await post_account(
        lgw,
        "/auth/account/link",
        {"institution": "kb", "pass_number": linked_number, "password": OTHER_PASSWORD},
    )
    assert linked.status == 303

    refused = await change_username(lgw, stranger.pass_number, PASSWORD)
    assert refused.status == 422
    assert reason("error.username.pass_number") in await refused.text()
    resp = await change_username(lgw, linked_number, PASSWORD)
    assert resp.status == 303
    assert (await stored(pool, patron)).username == linked_number
    page = await (await lgw.get("/auth/account")).text()
    assert reason("account.saved.username") in page
    assert (await backend_sees(lgw))["x-library-username"] == linked_number
    assert await can_log_in(lgw, linked_number)


# --- Usernames from before the character rules ------------------------------------------------


def outdated_notice(*, characters: str = "", rule: str = "") -> str:
    """The account page's notice for a username the rules refuse, as the page shows it."""
    text = (
        T["account.outdated_username.characters"].format(characters=characters)
        if characters
        else T["account.outdated_username.rule"].format(rule=T[f"error.username.{rule}"])
    )
    return str(markupsafe.escape(text))


@pytest.mark.parametrize(
    ("legacy", "notice"),
    [
        ("o'brien", outdated_notice(characters="'")),
        ("jan&co", outdated_notice(characters="&")),
        ("\u0301lezer", outdated_notice(rule="combining_mark")),
    ],
    ids=["quote", "ampersand", "combining_mark_first"],
)
async def test_a_username_the_rules_now_refuse_still_logs_in_and_is_asked_to_change(
    gw: Gateway,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    legacy: str,
    notice: str,
) -> None:
    """Defends against locking out patrons whose names were stored before the character rules
    (imported or chosen earlier), and against leaving them with a name the rules refuse
    without telling them."""
    number = unique_pass_number()
    # Stored directly, as before the rules: the repository does not ask them.
    patron = await signed_in(gw, pool, hasher, username=f"{legacy}{number}")
    assert patron.username == f"{legacy}{number}"
    assert await can_log_in(gw, patron.username.upper())
    assert (await backend_sees(gw))["x-library-user-id"] == patron.id

    page = await (await gw.get("/auth/account")).text()
    assert 'id="outdated-username"' in page
    assert notice in page
    # Above the username form, so it is read before the form.
    assert page.index(notice) < page.index('action="/auth/account/username"')

    # A refused attempt keeps the notice; the rules apply to the new name as to anybody's.
    refused = await change_username(gw, f"{legacy}.{number}<", PASSWORD)
    assert refused.status == 422
    assert notice in await refused.text()

    new_name = f"Lezer.{number}"
    assert (await change_username(gw, new_name, PASSWORD)).status == 303
    page = await (await gw.get("/auth/account")).text()
    assert f"<dd>{new_name}</dd>" in page
    assert 'id="outdated-username"' not in page
    assert (await stored(pool, patron)).username == new_name
    assert await can_log_in(gw, new_name)
    assert not await can_log_in(gw, patron.username)


@pytest.mark.parametrize("name", ["ordinary", "own_pass_number", "other_script"])
async def test_a_username_within_the_rules_gets_no_notice(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, name: str
) -> None:
    """Defends against nagging every patron (the notice is for names the rules refuse)."""
    number = unique_pass_number()
    username = {
        "ordinary": f"jan.de-vries_{number}@thuis",
        "own_pass_number": number,
        "other_script": f"\u0915\u0943\u0937\u094d\u0923{number}",
    }[name]
    await signed_in(gw, pool, hasher, username=username, pass_number=number)
    page = await (await gw.get("/auth/account")).text()
    assert 'id="outdated-username"' not in page
    assert T["account.outdated_username.rule"].split(":")[0] not in page


# --- Who may use the account page --------------------------------------------------------------


async def test_the_account_page_and_its_forms_send_anonymous_visitors_to_the_login(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Defends against changes by somebody without a session, or with a logged-out one."""
    patron = await signed_in(gw, pool, hasher)
    token = await form_token(gw, "/auth/account")
    old_cookie = jar_cookie(gw)
    logout_token = await form_token(gw, "/auth/logout")
    assert (await post_form(gw, "/auth/logout", {"csrf_token": logout_token})).status == 303

    def to_login(resp: ClientResponse) -> bool:
        target = URL(resp.headers.get("Location", ""))
        return (
            resp.status == 302
            and target.path == "/auth/login"
            and (target.query.get("next") == "/auth/account")
        )

    assert to_login(await gw.get("/auth/account", allow_redirects=False))
    # The cookie from before the logout, replayed with the token its page gave out.
    assert old_cookie is not None
    for path, fields in (
        ("/auth/account/username", {"new_username": "Overnemer", "password": PASSWORD}),
        ("/auth/account/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD}),
    ):
        resp = await fetch(
            gw, path, old_cookie, method="POST", data={"csrf_token": token, **fields}
        )
        assert to_login(resp)
    assert (await stored(pool, patron)).username == patron.username
    assert await can_log_in(gw, patron.username, PASSWORD)


@pytest.mark.parametrize("path", ["/auth/account/username", "/auth/account/password"])
@pytest.mark.parametrize("token", ["missing", "empty", "another_sessions"])
async def test_account_changes_without_the_sessions_csrf_token_are_refused(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, path: str, token: str
) -> None:
    """Defends against a foreign site submitting the account forms in a patron's browser."""
    fields = {
        "new_username": f"Vreemd.{unique_pass_number()}",
        "password": PASSWORD,
        "current_password": PASSWORD,
        "new_password": NEW_PASSWORD,
    }
    if token != "missing":
        # A token the attacker got from their own visit is no good in the patron's session.
        fields["csrf_token"] = await form_token(gw) if token == "another_sessions" else ""
    gw.session.cookie_jar.clear()
    patron = await signed_in(gw, pool, hasher)
    resp = await post_form(gw, path, fields)
    assert resp.status == 403
    assert str(markupsafe.escape(T["csrf.title"])) in await resp.text()
    now = await stored(pool, patron)
    assert now.username == patron.username and now.password_hash == patron.password_hash
    assert (await backend_sees(gw))["x-library-user-id"] == patron.id


# --- Changing the password ---------------------------------------------------------------------


async def test_password_change_with_a_wrong_current_password_changes_nothing(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Defends against somebody at an unattended, logged-in browser taking the account over."""
    patron = await signed_in(gw, pool, hasher)
    assert patron.email is not None
    resp = await change_password(gw, "not the password at all", NEW_PASSWORD)
    assert resp.status == 403
    assert reason("error.wrong_password") in await resp.text()
    assert (await stored(pool, patron)).password_hash == patron.password_hash
    assert await outbox_for(pool, patron.email) == []
    assert not await can_log_in(gw, patron.username, NEW_PASSWORD)
    assert await can_log_in(gw, patron.username, PASSWORD)


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("too_short", "too_short"),
        ("common", "common"),
        ("the_username", "matches_identity"),
        ("the_pass_number", "matches_identity"),
        ("257_characters", "too_long"),
    ],
)
async def test_a_new_password_against_the_policy_is_refused_with_422_and_the_reason(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, case: str, error: str
) -> None:
    """Defends against guessable passwords: short, common, or the patron's own login names."""
    patron = await signed_in(gw, pool, hasher, username=f"Lange.Lezer.{unique_pass_number()}")
    new = {
        "too_short": "kort123",
        "common": "password1",
        "the_username": patron.username.upper(),
        "the_pass_number": patron.pass_number,
        "257_characters": ("een lange zin " * 20)[:257],
    }[case]
    resp = await change_password(gw, PASSWORD, new)
    assert resp.status == 422
    assert reason(f"error.password.{error}") in await resp.text()
    assert (await stored(pool, patron)).password_hash == patron.password_hash
    assert await can_log_in(gw, patron.username, PASSWORD)


async def test_a_password_of_exactly_256_characters_is_accepted(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Defends against an off-by-one that refuses the longest password the rules allow."""
    patron = await signed_in(gw, pool, hasher)
    longest = ("een lange zin " * 20)[:256]
    assert (await change_password(gw, PASSWORD, longest)).status == 303
    assert await can_log_in(gw, patron.username, longest)


async def test_password_change_ends_every_other_session_keeps_this_one_and_tells_the_patron(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, mail_catcher: MailCatcher
) -> None:
    """Defends against a thief's session outliving the password change meant to lock them
    out, and against a change the patron never hears about."""
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    assert (await login(gw, patron.username)).status == 303
    elsewhere = jar_cookie(gw)
    gw.session.cookie_jar.clear()
    assert (await login(gw, patron.pass_number)).status == 303
    assert (await backend_sees(gw))["x-library-user-id"] == patron.id

    resp = await change_password(gw, PASSWORD, NEW_PASSWORD)
    assert resp.status == 303
    assert resp.headers["Location"] == "/auth/account"
    page = await (await gw.get("/auth/account")).text()
    assert reason("account.saved.password") in page
    here = jar_cookie(gw)
    assert await account_on(gw, here) == patron.id
    assert await account_on(gw, elsewhere) is None

    mail = await mail_for(mail_catcher, patron.email, "password_changed")
    assert patron.username in plain_text(mail)
    assert NEW_PASSWORD not in mail.as_string()
    assert not await can_log_in(gw, patron.username, PASSWORD)
    assert await can_log_in(gw, patron.username, NEW_PASSWORD)
