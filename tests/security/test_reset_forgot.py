"""Account recovery under attack: a patron locked out by a guesser must still be able to reset,
reset links must not be steerable to an attacker's host, and the forms must not become a
mail cannon or a way to set somebody else's password.
"""

from __future__ import annotations

import asyncpg
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestServer

from auth.credentials.passwords import PasswordHasher
from auth.mail import SmtpTransport
from auth.store.accounts import Account, Accounts
from gateway.demo.mailcatcher import MailCatcher
from tests.helpers import (
    PASSWORD,
    Gateway,
    MakeGateway,
    add_patron,
    attempt,
    followed,
    form_token,
    link_in,
    mail_for,
    mail_subject,
    outbox_for,
    post_form,
    routes_for,
    settle,
    token_of,
)

NEW_PASSWORD = "a lantern in the stacks"
PUBLIC_URL = "http://login.library.example"


@pytest.fixture
async def gw(make_gateway: MakeGateway, backend: TestServer, mail_catcher: MailCatcher) -> Gateway:
    return await make_gateway(
        routes_for(backend.port),
        env={"GATEWAY_PUBLIC_URL": PUBLIC_URL},
        mail_transport=SmtpTransport(mail_catcher.url),
    )


async def ask_reset(gw: Gateway, identifier: str, **headers: str) -> ClientResponse:
    gw.session.cookie_jar.clear()
    token = await form_token(gw, "/auth/forgot-password")
    return await post_form(
        gw,
        "/auth/forgot-password",
        {"csrf_token": token, "identifier": identifier},
        headers=headers,
    )


async def reset_token(gw: Gateway, catcher: MailCatcher, patron: Account) -> str:
    assert patron.email is not None
    assert (await ask_reset(gw, patron.username)).status == 200
    await settle(gw)
    return token_of(link_in(await mail_for(catcher, patron.email, "reset")))


async def set_new_password(gw: Gateway, token: str, password: str, **extra: str) -> ClientResponse:
    csrf = await form_token(gw, "/auth/forgot-password")
    return await post_form(
        gw,
        "/auth/reset-password",
        {"csrf_token": csrf, "token": token, "new_password": password, **extra},
    )


async def stored_hash(pool: asyncpg.Pool, account: Account) -> str | None:
    found = await Accounts(pool).by_id(account.id)
    assert found is not None
    return found.password_hash


async def test_a_patron_blocked_by_a_guesser_can_still_reset_the_password(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, mail_catcher: MailCatcher
) -> None:
    """An attacker who keeps an account blocked must not also cut off its recovery (ASVS
    2.2.1: controls effective against account lockout attacks; the throttle never applies
    to the reset path)."""
    patron = await add_patron(pool, hasher)
    for n in range(5):
        assert (await attempt(gw, patron.username, f"guess {n}"))[0] == 401
    assert (await attempt(gw, patron.username, PASSWORD))[0] == 429
    before = await stored_hash(pool, patron)
    token = await reset_token(gw, mail_catcher, patron)
    resp = await set_new_password(gw, token, NEW_PASSWORD)
    assert resp.status == 303
    assert resp.headers["Location"] == "/auth/login?notice=reset"
    assert await stored_hash(pool, patron) != before
    # The reset lifts the guesser's block: the patron proved control of the account's mail,
    # and the guesser's old password is worthless now. The new password works at once.
    assert (await attempt(gw, patron.username, NEW_PASSWORD))[0] == 303
    assert (await attempt(gw, patron.username, PASSWORD))[0] == 401


@pytest.mark.parametrize(
    "hostile",
    [
        pytest.param({"X-Forwarded-Host": "evil.example"}, id="X-Forwarded-Host-CVE-2017-8295"),
        pytest.param({"Forwarded": "host=evil.example;proto=https"}, id="Forwarded-CVE-2017-8295"),
        pytest.param(
            {
                "X-Forwarded-Host": "login.library.example.evil.example",
                "X-Forwarded-Proto": "https",
            },
            id="lookalike-host-oauth2-proxy-CVE-2021-21291",
        ),
    ],
)
async def test_the_reset_link_ignores_forwarding_headers_even_from_a_trusted_proxy(
    make_gateway: MakeGateway,
    backend: TestServer,
    mail_catcher: MailCatcher,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    hostile: dict[str, str],
) -> None:
    """Password-reset poisoning (CVE-2017-8295): a trusted proxy is believed about the
    client's address, never about the host the links point to; that comes only from
    GATEWAY_PUBLIC_URL."""
    gw = await make_gateway(
        routes_for(backend.port),
        env={"GATEWAY_PUBLIC_URL": PUBLIC_URL, "GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32"},
        mail_transport=SmtpTransport(mail_catcher.url),
    )
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    assert (await ask_reset(gw, patron.username, **hostile)).status == 200
    await settle(gw)
    mail = await mail_for(mail_catcher, patron.email, "reset")
    assert link_in(mail).startswith(f"{PUBLIC_URL}/auth/reset-password?token=")
    assert "evil.example" not in mail.as_string()


async def test_asking_under_every_spelling_of_one_account_still_sends_at_most_three_mails(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Mail bombing through the forgot form by rotating the identifier: username, pass
    number, e-mail address and their case variants all count against the one account
    (ASVS 11.1.4: anti-automation against excessive calls)."""
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    spellings = [
        patron.username,
        patron.pass_number,
        patron.email,
        patron.username.upper(),
        patron.email.upper(),
        f" {patron.pass_number} ",
    ]
    for identifier in spellings:
        assert (await ask_reset(gw, identifier)).status == 200
        await settle(gw)
    subject = mail_subject("reset")
    mails = [row for row in await outbox_for(pool, patron.email) if row["subject"] == subject]
    assert len(mails) == 3


async def test_extra_fields_cannot_point_a_reset_at_another_account(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, mail_catcher: MailCatcher
) -> None:
    """Mass assignment (ASVS 5.1.2) and IDOR (ASVS 4.2.1): the token alone decides whose
    password is set; account ids or names added to the form are ignored."""
    owner = await add_patron(pool, hasher)
    other = await add_patron(pool, hasher)
    others_hash = await stored_hash(pool, other)
    token = await reset_token(gw, mail_catcher, owner)
    resp = await set_new_password(
        gw,
        token,
        NEW_PASSWORD,
        account_id=other.id,
        username=other.username,
        pass_number=other.pass_number,
    )
    assert resp.status == 303
    assert await stored_hash(pool, other) == others_hash
    assert (await attempt(gw, owner.username, NEW_PASSWORD))[0] == 303
    assert (await attempt(gw, other.username, NEW_PASSWORD))[0] == 401


@pytest.mark.parametrize(
    "weak",
    [
        pytest.param("password123", id="breached-list-ASVS-2.1.7"),
        pytest.param("short", id="too-short-ASVS-1.2.4"),
        pytest.param("x" * 257, id="too-long-ASVS-1.2.4"),
    ],
)
async def test_a_reset_cannot_set_a_password_the_policy_refuses(
    gw: Gateway,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    mail_catcher: MailCatcher,
    weak: str,
) -> None:
    """The recovery path applies the same password rules as every other (ASVS 1.2.4: no
    weaker alternative path), and a refusal leaves the link usable."""
    patron = await add_patron(pool, hasher)
    before = await stored_hash(pool, patron)
    token = await reset_token(gw, mail_catcher, patron)
    assert (await set_new_password(gw, token, weak)).status == 422
    assert await stored_hash(pool, patron) == before
    assert (await set_new_password(gw, token, NEW_PASSWORD)).status == 303


async def test_the_page_holding_a_reset_token_is_never_cached_nor_referred(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, mail_catcher: MailCatcher
) -> None:
    """The token sits in the URL of the reset page: it must not leak through the Referer of
    anything the page links to (ASVS 14.4.6) nor stay in a shared computer's cache
    (ASVS 8.2.1)."""
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    assert (await ask_reset(gw, patron.username)).status == 200
    await settle(gw)
    link = link_in(await mail_for(mail_catcher, patron.email, "reset"))
    page = await gw.get(followed(link))
    assert page.status == 200
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
