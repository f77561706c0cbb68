"""Forgotten password and forgotten username through the whole gateway and a real SMTP server:
what the forms answer, what the mails hold, and every way a reset link could be abused."""

from __future__ import annotations

import asyncio
import hashlib
import re
from pathlib import Path
from urllib.parse import quote, urlencode

import asyncpg
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestServer
from cryptography.fernet import MultiFernet
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpClient
from yarl import URL

from auth.credentials.mail_limits import MailLimits
from auth.credentials.passwords import PasswordHasher
from auth.credentials.throttle import address_key
from auth.mail import SmtpTransport
from auth.pages.activation import Invitations
from auth.services import SERVICES
from auth.store.accounts import Account, Accounts
from gateway.demo.mailcatcher import MailCatcher
from gateway.ops.admin import create_admin_app
from tests.helpers import (
    PASSWORD,
    Gateway,
    MakeGateway,
    account_on,
    add_patron,
    can_log_in,
    cli,
    csrf_in,
    followed,
    form_token,
    jar_cookie,
    link_in,
    login,
    mail_for,
    mail_subject,
    open_cookie,
    outbox_for,
    page_text,
    plain_text,
    post_form,
    routes_for,
    set_cookies,
    settle,
    token_of,
    unique_pass_number,
)

PUBLIC_URL = "https://login.library.example"
NEW_PASSWORD = "a lantern in the stacks"

pytestmark = pytest.mark.usefixtures("fresh_recovery_mails")


@pytest.fixture
def gw(mailing_gw: Gateway) -> Gateway:
    return mailing_gw


text_of = page_text


def without_tokens(page: str) -> str:
    """A page with its per-request randomness (CSRF token, style nonce) blanked out."""
    page = re.sub(r'(name="csrf_token" value=")[^"]*', r"\1", page)
    return re.sub(r'nonce="[^"]*"', 'nonce=""', page)


async def ask_reset(gw: Gateway, identifier: str) -> ClientResponse:
    token = await form_token(gw, "/auth/forgot-password")
    return await post_form(
        gw, "/auth/forgot-password", {"csrf_token": token, "identifier": identifier}
    )


async def ask_username(gw: Gateway, email: str) -> ClientResponse:
    token = await form_token(gw, "/auth/forgot-username")
    return await post_form(gw, "/auth/forgot-username", {"csrf_token": token, "email": email})


async def reset_link(gw: Gateway, catcher: MailCatcher, patron: Account) -> str:
    """Ask for a reset in a fresh browser and return the link from the mail that arrives."""
    assert patron.email is not None
    gw.session.cookie_jar.clear()
    assert (await ask_reset(gw, patron.username)).status == 200
    await settle(gw)
    return link_in(await mail_for(catcher, patron.email, "reset"))


async def post_reset(gw: Gateway, token: str, password: str) -> ClientResponse:
    """Post the reset form with the jar's session (and its CSRF token)."""
    csrf = await form_token(gw, "/auth/forgot-password")
    return await post_form(
        gw, "/auth/reset-password", {"csrf_token": csrf, "token": token, "new_password": password}
    )


async def token_row(pool: asyncpg.Pool, token: str) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT * FROM account_tokens WHERE token_hash = $1",
        hashlib.sha256(token.encode()).digest(),
    )
    assert row is not None
    return row


async def stored_hash(pool: asyncpg.Pool, account: Account) -> str | None:
    found = await Accounts(pool).by_id(account.id)
    assert found is not None
    return found.password_hash


def is_dead_link(page: str) -> bool:
    return text_of("reset.invalid.title") in page and 'name="new_password"' not in page


# --- Asking for a reset ------------------------------------------------------------------------


async def test_forgot_password_answers_alike_whether_or_not_an_account_matched(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Defends against using the form to find out which usernames, pass numbers and e-mail
    addresses have an account."""
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    answers = set()
    for identifier in (
        patron.username,
        patron.pass_number,
        patron.email,
        f"nobody{unique_pass_number()}",
        f"nobody{unique_pass_number()}@x.org",
    ):
        gw.session.cookie_jar.clear()
        resp = await ask_reset(gw, identifier)
        answers.add((resp.status, without_tokens(await resp.text())))
    assert len(answers) == 1
    [(status, page)] = answers
    assert status == 200 and text_of("forgot.sent") in page
    # The same answer did not mean nothing happened: each known identifier got its mail.
    await settle(gw)
    assert len(await outbox_for(pool, patron.email)) == 3


async def test_the_reset_link_is_built_from_the_public_url_never_from_the_request(
    make_gateway: MakeGateway,
    backend: TestServer,
    mail_catcher: MailCatcher,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
) -> None:
    """Defends against password-reset poisoning: a forged Host sending the patron's token to
    the attacker's site."""
    gw = await make_gateway(
        routes_for(backend.port),
        env={"GATEWAY_PUBLIC_URL": PUBLIC_URL},
        mail_transport=SmtpTransport(mail_catcher.url),
    )
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    hostile = {
        "Host": "evil.example",
        "X-Forwarded-Host": "evil.example",
        "X-Forwarded-Proto": "http",
        "Forwarded": "host=evil.example",
    }
    page = await gw.get("/auth/forgot-password", headers=hostile)
    # An https public URL makes the cookie Secure, which the test client would not send back
    # over plain HTTP; it is carried by hand.
    [cookie] = set_cookies(page, "__Host-library_session")
    gw.session.cookie_jar.clear()
    resp = await gw.post(
        "/auth/forgot-password",
        allow_redirects=False,
        headers={**hostile, "Cookie": f"{cookie.key}={cookie.value}"},
        data={"csrf_token": csrf_in(await page.text()), "identifier": patron.username},
    )
    assert resp.status == 200
    await settle(gw)
    mail = await mail_for(mail_catcher, patron.email, "reset")
    link = link_in(mail)
    assert link.startswith(f"{PUBLIC_URL}/auth/reset-password?token=")
    assert "evil.example" not in mail.as_string()
    shown = await gw.get(followed(link), headers=hostile)
    assert shown.status == 200
    assert 'name="new_password"' in await shown.text()


# --- Following the link ------------------------------------------------------------------------


async def test_opening_the_link_only_shows_the_form_however_often(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, mail_catcher: MailCatcher
) -> None:
    """Defends against mail scanners and link previews, which open links, using the token up
    or changing anything."""
    patron = await add_patron(pool, hasher)
    link = await reset_link(gw, mail_catcher, patron)
    for _ in range(2):
        resp = await gw.get(followed(link))
        assert resp.status == 200
        page = await resp.text()
        assert 'name="new_password"' in page
        assert f'name="token" value="{token_of(link)}"' in page
    assert (await token_row(pool, token_of(link)))["used_at"] is None
    assert await stored_hash(pool, patron) == patron.password_hash
    assert await can_log_in(gw, patron.username, PASSWORD)
    # And the link still does its job afterwards.
    gw.session.cookie_jar.clear()
    assert (await post_reset(gw, token_of(link), NEW_PASSWORD)).status == 303


async def test_reset_sets_the_password_ends_every_session_and_does_not_log_in(
    gw: Gateway,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    mail_catcher: MailCatcher,
    cookie_keys: MultiFernet,
) -> None:
    """Defends against a thief's session surviving the reset, a reset link that doubles as a
    login, and a reset the patron never hears about."""
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    assert (await login(gw, patron.username)).status == 303
    old_session = jar_cookie(gw)
    assert await account_on(gw, old_session) == patron.id
    link = await reset_link(gw, mail_catcher, patron)

    page = await gw.get(followed(link))
    resp = await post_form(
        gw,
        "/auth/reset-password",
        {
            "csrf_token": csrf_in(await page.text()),
            "token": token_of(link),
            "new_password": NEW_PASSWORD,
        },
    )
    assert resp.status == 303
    assert URL(resp.headers["Location"]).path == "/auth/login"
    for cookie in [*(m.value for m in set_cookies(resp)), jar_cookie(gw)]:
        if cookie:
            assert "sid" not in open_cookie(cookie_keys, cookie)["session"]
    anonymous = await gw.get(
        "/reservations/mine", headers={"Accept": "application/json"}, allow_redirects=False
    )
    assert anonymous.status == 401
    assert await account_on(gw, old_session) is None

    await settle(gw)
    notice = await mail_for(mail_catcher, patron.email, "password_changed")
    assert patron.username in plain_text(notice)
    assert NEW_PASSWORD not in notice.as_string()
    assert not await can_log_in(gw, patron.username, PASSWORD)
    assert await can_log_in(gw, patron.username, NEW_PASSWORD)


def href_of(page: str, path: str) -> str:
    [href] = re.findall(rf'href="({re.escape(path)}[^"]*)"', page)
    return str(href).replace("&amp;", "&")


async def test_a_patron_who_resets_the_password_on_the_way_lands_where_they_were_going(
    gw: Gateway,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    mail_catcher: MailCatcher,
) -> None:
    """Sent to the login by a reservation page, the patron has forgotten the password: the
    forgot link, the mailed reset link, the reset and the login after it all keep the way
    back, so the patron ends on the reservation page, not on the front page."""
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    going = "/reservations/mine?shelf=3&sort=due"
    login_page = await (await gw.get(f"/auth/login?next={quote(going, safe='')}")).text()
    forgot = href_of(login_page, "/auth/forgot-password")
    assert URL(forgot).query["next"] == going
    form = await (await gw.get(forgot)).text()
    sent = await post_form(
        gw,
        "/auth/forgot-password",
        {"csrf_token": csrf_in(form), "identifier": patron.username, "next": going},
    )
    assert sent.status == 200
    assert URL(href_of(await sent.text(), "/auth/login")).query["next"] == going
    await settle(gw)
    link = link_in(await mail_for(mail_catcher, patron.email, "reset"))
    assert URL(link).query["next"] == going

    reset_page = await (await gw.get(followed(link))).text()
    done = await post_form(
        gw,
        "/auth/reset-password",
        {
            "csrf_token": csrf_in(reset_page),
            "token": token_of(link),
            "new_password": NEW_PASSWORD,
            "next": going,
        },
    )
    assert done.status == 303
    back = URL(done.headers["Location"])
    assert back.path == "/auth/login" and back.query["next"] == going
    login_again = await (await gw.get(str(back))).text()
    assert f'name="next" value="{going.replace("&", "&amp;")}"' in login_again
    arrived = await login(gw, patron.username, NEW_PASSWORD, next=going)
    assert arrived.status == 303
    assert arrived.headers["Location"] == going


THEMED_CLIENTS = """\
clients:
  - client_id: online-library
    name: De Online Bibliotheek
    redirect_uris: [https://online.example.nl/callback]
    theme: {name: De Online Bibliotheek, colour: "#e4003b", text_colour: "#fffff0"}
"""
THEMED = ("--brand:#e4003b", "--brand-text:#fffff0", "De Online Bibliotheek")


async def test_the_recovery_pages_of_a_connected_librarys_login_wear_its_theme(
    make_gateway: MakeGateway,
    backend: TestServer,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    mail_catcher: MailCatcher,
) -> None:
    """Sent to the login by a connected library (its authorization request), the patron
    follows "forgot your password?" and "forgot your username?": those pages, the answers
    to their forms, the reset page the mail leads to and the way back wear that library's
    colours, as the login did, from clients.yaml and nothing else."""
    gw = await make_gateway(
        routes_for(backend.port),
        clients=THEMED_CLIENTS,
        mail_transport=SmtpTransport(mail_catcher.url),
    )
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    authorize = "/auth/oidc/authorize?" + urlencode(
        {
            "response_type": "code",
            "client_id": "online-library",
            "redirect_uri": "https://online.example.nl/callback",
            "scope": "openid",
            "state": "s",
            "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256",
        }
    )
    sent_to_login = await gw.get(authorize, allow_redirects=False)
    going = URL(sent_to_login.headers["Location"]).query["next"]
    assert URL(going).path == "/auth/oidc/authorize"
    login_page = await (await gw.get(sent_to_login.headers["Location"])).text()
    assert all(mark in login_page for mark in THEMED)
    pages = {}
    for path, field, value in (
        ("/auth/forgot-password", "identifier", patron.username),
        ("/auth/forgot-username", "email", patron.email),
    ):
        opened = href_of(login_page, path)
        assert URL(opened).query["next"] == going
        form = await (await gw.get(opened)).text()
        answer = await post_form(
            gw, path, {"csrf_token": csrf_in(form), field: value, "next": going}
        )
        assert answer.status == 200
        pages[path] = form
        pages[path + " sent"] = await answer.text()
    await settle(gw)
    link = link_in(await mail_for(mail_catcher, patron.email, "reset"))
    pages["reset"] = await (await gw.get(followed(link))).text()
    for name, page in pages.items():
        assert all(mark in page for mark in THEMED), name
        if name != "reset":
            back = await (await gw.get(href_of(page, "/auth/login"))).text()
            assert all(mark in back for mark in THEMED), name


async def test_the_recovery_pages_take_no_theme_from_a_parameter(
    make_gateway: MakeGateway, backend: TestServer
) -> None:
    """Only a registered client's own theme: colours or names in the page's query, or in a
    `next` naming no registered client, leave the library's own."""
    gw = await make_gateway(routes_for(backend.port), clients=THEMED_CLIENTS)
    forged = {"theme": "#000000", "colour": "#000000", "name": "Evil Corp"}
    unknown = "/auth/oidc/authorize?" + urlencode({"client_id": "evil", **forged})
    twice = "/auth/oidc/authorize?client_id=online-library&client_id=evil"
    for path in ("/auth/forgot-password", "/auth/forgot-username"):
        for query in (
            {"next": unknown},
            {"next": twice},
            {**forged, "next": "/auth/oidc/authorize?client_id=nobody"},
        ):
            page = await (await gw.get(f"{path}?{urlencode(query)}")).text()
            assert "#e4003b" not in page and "#000000" not in page, (path, query)
            assert "Evil Corp" not in page, (path, query)


@pytest.mark.parametrize(
    "hostile",
    [
        "https://evil.example/login",
        "//evil.example",
        "/\\evil.example",
        "/auth/logout",
    ],
)
async def test_a_hostile_next_is_dropped_on_every_recovery_hop(
    gw: Gateway,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    mail_catcher: MailCatcher,
    hostile: str,
) -> None:
    """The recovery pages carry `next` only through the same gate as the login: a forged
    value never reaches a link, the reset mail or the redirect after the reset (CWE-601)."""
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    encoded = quote(hostile, safe="")
    form = await (await gw.get(f"/auth/forgot-password?next={encoded}")).text()
    assert "evil" not in form and "logout" not in form.split("<main", 1)[-1]
    sent = await post_form(
        gw,
        "/auth/forgot-password",
        {"csrf_token": csrf_in(form), "identifier": patron.username, "next": hostile},
    )
    assert sent.status == 200
    assert "evil" not in await sent.text()
    await settle(gw)
    link = link_in(await mail_for(mail_catcher, patron.email, "reset"))
    assert "next" not in URL(link).query
    reset_page = await (await gw.get(followed(link) + f"&next={encoded}")).text()
    assert "evil" not in reset_page
    done = await post_form(
        gw,
        "/auth/reset-password",
        {
            "csrf_token": csrf_in(reset_page),
            "token": token_of(link),
            "new_password": NEW_PASSWORD,
            "next": hostile,
        },
    )
    assert done.status == 303
    assert done.headers["Location"] == "/auth/login?notice=reset"


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("common", "common"),
        ("the_username", "matches_identity"),
        ("too_short", "too_short"),
    ],
)
async def test_a_refused_new_password_shows_the_reason_and_leaves_the_link_working(
    gw: Gateway,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    mail_catcher: MailCatcher,
    case: str,
    error: str,
) -> None:
    """Defends against the reset form as a back door around the password rules, and against
    a refused attempt using the link up."""
    patron = await add_patron(pool, hasher)
    link = await reset_link(gw, mail_catcher, patron)
    weak = {"common": "password1", "the_username": patron.username.upper(), "too_short": "kort123"}[
        case
    ]
    refused = await post_reset(gw, token_of(link), weak)
    assert refused.status == 422
    page = await refused.text()
    assert text_of(f"error.password.{error}") in page
    assert f'name="token" value="{token_of(link)}"' in page
    assert await stored_hash(pool, patron) == patron.password_hash
    assert (await post_reset(gw, token_of(link), NEW_PASSWORD)).status == 303
    assert await can_log_in(gw, patron.username, NEW_PASSWORD)


async def test_a_reset_link_dies_when_the_account_is_disabled_and_stays_dead_after(
    gw: Gateway,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    mail_catcher: MailCatcher,
    database_url: str,
    tmp_path: Path,
) -> None:
    """A blocked pass cannot be reopened with a reset link mailed before the block, neither
    while it is blocked nor once the library lifts the block."""
    patron = await add_patron(pool, hasher)
    link = await reset_link(gw, mail_catcher, patron)
    env = {"GATEWAY_DATABASE_URL": database_url}
    for command in ("disable", "enable"):
        done = await asyncio.to_thread(
            cli, "accounts", command, "--username", patron.username, env=env, cwd=tmp_path
        )
        assert done.returncode == 0, done.stderr
        page = await gw.get(followed(link))
        assert page.status == 410 and is_dead_link(await page.text())
        resp = await post_reset(gw, token_of(link), NEW_PASSWORD)
        assert is_dead_link(await resp.text())
    assert await can_log_in(gw, patron.username, PASSWORD)
    assert not await can_log_in(gw, patron.username, NEW_PASSWORD)


async def test_a_reset_link_mailed_before_a_password_change_dies_with_the_old_password(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, mail_catcher: MailCatcher
) -> None:
    """Defends against a reset link somebody else got hold of (a shared mailbox, one left
    open) outliving the password change the patron made on the account page to lock them
    out: the link would set a password of the intruder's choosing for another half hour."""
    patron = await add_patron(pool, hasher)
    link = await reset_link(gw, mail_catcher, patron)
    assert (await login(gw, patron.username)).status == 303
    csrf = await form_token(gw, "/auth/account")
    changed = await post_form(
        gw,
        "/auth/account/password",
        {"csrf_token": csrf, "current_password": PASSWORD, "new_password": NEW_PASSWORD},
    )
    assert changed.status == 303

    gw.session.cookie_jar.clear()
    page = await gw.get(followed(link))
    assert page.status == 410 and is_dead_link(await page.text())
    resp = await post_reset(gw, token_of(link), "the intruder's own password")
    assert resp.status == 410 and is_dead_link(await resp.text())
    assert await can_log_in(gw, patron.username, NEW_PASSWORD)
    assert not await can_log_in(gw, patron.username, "the intruder's own password")


async def test_a_used_link_is_gone(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, mail_catcher: MailCatcher
) -> None:
    """Defends against replaying a reset link found later in a mailbox or browser history."""
    patron = await add_patron(pool, hasher)
    link = await reset_link(gw, mail_catcher, patron)
    assert (await post_reset(gw, token_of(link), NEW_PASSWORD)).status == 303
    replay = await post_reset(gw, token_of(link), "the replayed password")
    assert replay.status == 410
    assert is_dead_link(await replay.text())
    shown = await gw.get(followed(link))
    assert shown.status == 410
    assert await can_log_in(gw, patron.username, NEW_PASSWORD)
    assert not await can_log_in(gw, patron.username, "the replayed password")


async def test_an_expired_link_is_gone(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, mail_catcher: MailCatcher
) -> None:
    """Defends against a link that works forever."""
    patron = await add_patron(pool, hasher)
    link = await reset_link(gw, mail_catcher, patron)
    await pool.execute(
        "UPDATE account_tokens SET expires_at = now() - interval '1 second' WHERE token_hash = $1",
        hashlib.sha256(token_of(link).encode()).digest(),
    )
    shown = await gw.get(followed(link))
    assert shown.status == 410 and is_dead_link(await shown.text())
    assert (await post_reset(gw, token_of(link), NEW_PASSWORD)).status == 410
    assert await stored_hash(pool, patron) == patron.password_hash


async def test_two_simultaneous_uses_of_one_link_set_one_password(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, mail_catcher: MailCatcher
) -> None:
    """Defends against a race that lets a second party use a link its owner is using."""
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    link = await reset_link(gw, mail_catcher, patron)
    csrf = await form_token(gw, "/auth/forgot-password")
    passwords = ("first of the two racers", "second of the two racers")
    answers = await asyncio.gather(
        *(
            post_form(
                gw,
                "/auth/reset-password",
                {"csrf_token": csrf, "token": token_of(link), "new_password": password},
            )
            for password in passwords
        )
    )
    assert sorted(resp.status for resp in answers) == [303, 410]
    winner, loser = passwords if answers[0].status == 303 else passwords[::-1]
    assert await can_log_in(gw, patron.username, winner)
    assert not await can_log_in(gw, patron.username, loser)
    notices = [
        row
        for row in await outbox_for(pool, patron.email)
        if row["subject"] == mail_subject("password_changed")
    ]
    assert len(notices) == 1


async def test_two_links_of_one_patron_used_at_once_set_one_password_and_fail_cleanly(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, mail_catcher: MailCatcher
) -> None:
    """Defends against two reset links of one account (two mails, or the patron's and a
    second party's) both setting a password when used at the same moment, and against the
    loser getting a server error instead of the dead-link page (each use voids the other's
    link: done in two orders at once, that would deadlock in PostgreSQL)."""
    services = gw.app[SERVICES]
    for _ in range(5):
        patron = await add_patron(pool, hasher)
        # The second link as the form's work makes it: only the race is of interest here.
        tokens = [
            token_of(await reset_link(gw, mail_catcher, patron)),
            await services.links.issue(patron.id, "reset", services.reset_ttl),
        ]
        csrf = await form_token(gw, "/auth/forgot-password")
        passwords = ("first of the two racers", "second of the two racers")
        answers = await asyncio.gather(
            *(
                post_form(
                    gw,
                    "/auth/reset-password",
                    {"csrf_token": csrf, "token": token, "new_password": password},
                )
                for token, password in zip(tokens, passwords, strict=True)
            )
        )
        assert sorted(resp.status for resp in answers) == [303, 410]
        winner, loser = passwords if answers[0].status == 303 else passwords[::-1]
        assert await can_log_in(gw, patron.username, winner)
        assert not await can_log_in(gw, patron.username, loser)


async def test_reset_and_activation_links_do_not_open_each_others_door(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, mail_catcher: MailCatcher
) -> None:
    """Defends against a token made for one purpose being spent on another."""
    patron = await add_patron(pool, hasher)
    reset = token_of(await reset_link(gw, mail_catcher, patron))
    services = gw.app[SERVICES]
    newcomer, newcomer_mail = unique_pass_number(), f"new{unique_pass_number()}@example.org"
    await Invitations(
        services.accounts,
        services.links,
        services.composer,
        services.public_url,
        services.activation_ttl,
    ).send(newcomer, newcomer_mail)
    await settle(gw)
    activate = token_of(link_in(await mail_for(mail_catcher, newcomer_mail, "activate")))

    assert (await gw.get("/auth/activate", params={"token": reset})).status == 410
    assert (await gw.get("/auth/reset-password", params={"token": activate})).status == 410
    csrf = await form_token(gw, "/auth/forgot-password")
    crossed = await post_form(
        gw,
        "/auth/activate",
        {"csrf_token": csrf, "token": reset, "username": "", "password": NEW_PASSWORD},
    )
    assert crossed.status == 410
    crossed = await post_form(
        gw,
        "/auth/reset-password",
        {"csrf_token": csrf, "token": activate, "new_password": NEW_PASSWORD},
    )
    assert crossed.status == 410
    assert await stored_hash(pool, patron) == patron.password_hash
    newcomer_account = await Accounts(pool).by_login_name(newcomer)
    assert newcomer_account is not None and newcomer_account.password_hash is None
    # Each still works where it belongs.
    assert (await post_reset(gw, reset, NEW_PASSWORD)).status == 303
    csrf = await form_token(gw, "/auth/forgot-password")
    own = await post_form(
        gw,
        "/auth/activate",
        {"csrf_token": csrf, "token": activate, "username": "", "password": NEW_PASSWORD},
    )
    assert own.status == 303


@pytest.mark.parametrize(
    "token",
    [
        "",
        "x",
        "A" * 43,
        "Ü" * 40,
        "' OR '1'='1' -- " * 3,
        "%00" * 20,
        "A" * 5000,
    ],
)
async def test_malformed_tokens_get_the_dead_link_page_not_an_error(
    gw: Gateway, token: str
) -> None:
    """Defends against crafted tokens crashing the page or reaching the database unchecked."""
    for path in ("/auth/reset-password", "/auth/activate"):
        shown = await gw.get(path, params={"token": token})
        assert shown.status == 410
    csrf = await form_token(gw, "/auth/forgot-password")
    posted = await post_form(
        gw,
        "/auth/reset-password",
        {"csrf_token": csrf, "token": token, "new_password": NEW_PASSWORD},
    )
    assert posted.status == 410
    posted = await post_form(
        gw,
        "/auth/activate",
        {"csrf_token": csrf, "token": token, "username": "", "password": NEW_PASSWORD},
    )
    assert posted.status == 410


async def test_the_database_keeps_only_a_hash_of_the_token(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, mail_catcher: MailCatcher
) -> None:
    """Defends against a copy of the database (a backup, a read-only leak) holding working
    reset links."""
    patron = await add_patron(pool, hasher)
    token = token_of(await reset_link(gw, mail_catcher, patron))
    assert (await token_row(pool, token))["account_id"] is not None
    dump = await pool.fetchval(
        "SELECT string_agg(t::text || encode(t.token_hash, 'escape'), ' ') FROM account_tokens t"
    )
    assert token not in dump
    # Nor does the outbox, once the mail has gone (FOR UPDATE: once its sender let go).
    outbox = await pool.fetchval(
        "SELECT string_agg(o::text, ' ') FROM (SELECT * FROM outbox FOR UPDATE) o"
    )
    assert token not in outbox


async def test_a_flood_of_requests_gets_the_same_answer_but_no_more_than_three_mails(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Defends against bombing a patron's inbox through the form, without locking them out."""
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    answers = set()
    for _ in range(4):
        resp = await ask_reset(gw, patron.username)
        answers.add((resp.status, without_tokens(await resp.text())))
    assert len(answers) == 1 and answers.pop()[0] == 200
    await settle(gw)
    assert len(await outbox_for(pool, patron.email)) == 3
    # The window moves on: fifteen minutes later the patron can have a link again.
    await pool.execute(
        "UPDATE account_tokens SET created_at = now() - interval '16 minutes'"
        " WHERE account_id = $1::uuid",
        patron.id,
    )
    assert (await ask_reset(gw, patron.pass_number)).status == 200
    await settle(gw)
    assert len(await outbox_for(pool, patron.email)) == 4


async def test_simultaneous_requests_cannot_slip_past_the_mail_limit(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Defends against bombing an inbox by sending the requests in parallel rather than one
    after another, so that each counts the links before any of the others has made one."""
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    csrf = await form_token(gw, "/auth/forgot-password")
    answers = await asyncio.gather(
        *(
            post_form(gw, "/auth/forgot-password", {"csrf_token": csrf, "identifier": name})
            for name in [patron.username, patron.pass_number, patron.email] * 3
        )
    )
    assert {resp.status for resp in answers} == {200}
    await settle(gw)
    assert len(await outbox_for(pool, patron.email)) == 3


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/auth/forgot-password", "identifier"),
        ("/auth/forgot-username", "email"),
    ],
)
async def test_the_forgot_forms_refuse_a_post_without_the_csrf_token(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, path: str, field: str
) -> None:
    """Defends against a foreign site making a patron's browser send mail on its behalf."""
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    await gw.get(path)
    resp = await post_form(gw, path, {field: patron.email})
    assert resp.status == 403
    await settle(gw)
    assert await outbox_for(pool, patron.email) == []


# --- Forgotten username ------------------------------------------------------------------------


async def test_forgot_username_answers_alike_and_mails_every_name_on_the_address(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, mail_catcher: MailCatcher
) -> None:
    """Defends against probing for addresses, and against a family sharing one address
    hearing of only one of its accounts."""
    shared = f"family{unique_pass_number()}@example.org"
    accounts = Accounts(pool)
    names = [f"Ouder.{unique_pass_number()}", f"Kind.{unique_pass_number()}"]
    for name in names:
        await accounts.add(
            pass_number=unique_pass_number(),
            email=shared,
            username=name,
            password_hash=await hasher.hash(PASSWORD),
        )
    stranger = await add_patron(pool, hasher)
    unknown = f"nobody{unique_pass_number()}@example.org"

    answers = set()
    for email in (shared.upper(), unknown):
        gw.session.cookie_jar.clear()
        resp = await ask_username(gw, email)
        answers.add((resp.status, without_tokens(await resp.text())))
    assert len(answers) == 1
    [(status, page)] = answers
    assert status == 200 and text_of("forgot_username.sent") in page

    await settle(gw)
    body = plain_text(await mail_for(mail_catcher, shared, "forgot_username"))
    for name in names:
        assert name in body
    assert stranger.username not in body
    assert len(await outbox_for(pool, shared)) == 1
    assert await outbox_for(pool, unknown) == []


# --- Counted for the operator ------------------------------------------------------------------


async def recovery_mails_counted(admin: Gateway) -> dict[tuple[str, str], float]:
    """gateway_recovery_mails_total as Prometheus reads it on the admin port, by (form,
    outcome)."""
    resp = await admin.get("/metrics")
    assert resp.status == 200
    return {
        (sample.labels["form"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(await resp.text())
        for sample in family.samples
        if sample.name == "gateway_recovery_mails_total"
    }


async def test_every_outcome_of_a_forgot_form_is_counted_for_prometheus(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, aiohttp_client: AiohttpClient
) -> None:
    """An operator sees the forms used as a mail cannon (limited_address), a mailbox being
    bombed (limited_account) and probing (no_match) on /metrics, though no answer shows it."""
    admin: Gateway = await aiohttp_client(create_admin_app(gw.app))
    before = await recovery_mails_counted(admin)
    limits = MailLimits(pool)
    per_account = limits.policy.per_account.mails
    wanted = {form: await add_patron(pool, hasher) for form in ("password", "username")}
    held_back = {form: await add_patron(pool, hasher) for form in ("password", "username")}
    assert (await ask_reset(gw, f"nobody{unique_pass_number()}")).status == 200
    assert (await ask_username(gw, f"nobody{unique_pass_number()}@x.org")).status == 200
    for _ in range(per_account + 1):
        assert (await ask_reset(gw, wanted["password"].username)).status == 200
        assert (await ask_username(gw, str(wanted["username"].email))).status == 200
    await settle(gw)
    # This client (the test's own, 127.0.0.1) has now asked for as many mails as an hour allows.
    async with pool.acquire() as conn:
        for _ in range(limits.policy.per_address[0].mails):
            await limits.sent(conn, address_key("127.0.0.1"))
    assert (await ask_reset(gw, held_back["password"].username)).status == 200
    assert (await ask_username(gw, str(held_back["username"].email))).status == 200
    await settle(gw)

    after = await recovery_mails_counted(admin)
    grown = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
    expected = {
        "sent": per_account,
        "limited_account": 1,
        "limited_address": 1,
        "no_match": 1,
    }
    for form in ("forgot_password", "forgot_username"):
        for outcome, count in expected.items():
            assert grown.get((form, outcome), 0.0) == count, (form, outcome)
        assert grown.get((form, "failed"), 0.0) == 0
    for patron in held_back.values():
        assert await outbox_for(pool, str(patron.email)) == []
