"""Account recovery under attack: a patron locked out by a guesser must still be able to reset,
reset links must not be steerable to an attacker's host, and the forms must not become a
mail cannon (per account, per mailbox, per client address) or a way to set somebody else's
password.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable

import asyncpg
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestServer

from auth.credentials.mail_limits import MailLimits, Policy
from auth.credentials.passwords import PasswordHasher
from auth.credentials.throttle import address_key
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
    unique_pass_number,
)

NEW_PASSWORD = "a lantern in the stacks"
PUBLIC_URL = "http://login.library.example"
LIMITS = Policy()
PER_HOUR, PER_DAY = LIMITS.per_address

pytestmark = pytest.mark.usefixtures("fresh_recovery_mails")


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


# --- Mail cannon: limits per account, per mailbox and per client address ------------------------

FORGOT_PASSWORD = ("/auth/forgot-password", "identifier")
FORGOT_USERNAME = ("/auth/forgot-username", "email")


@pytest.fixture
async def proxied(
    make_gateway: MakeGateway, backend: TestServer, mail_catcher: MailCatcher
) -> Gateway:
    """The gateway behind a trusted proxy on 127.0.0.1, so that each request names its client
    in X-Forwarded-For, as the patrons of a real deployment arrive."""
    return await make_gateway(
        routes_for(backend.port),
        env={"GATEWAY_PUBLIC_URL": PUBLIC_URL, "GATEWAY_TRUSTED_PROXIES": "127.0.0.1/32"},
        mail_transport=SmtpTransport(mail_catcher.url),
    )


async def ask(gw: Gateway, form: tuple[str, str], value: str, client: str) -> ClientResponse:
    """One "forgot" form sent from a fresh browser at `client`."""
    path, field = form
    gw.session.cookie_jar.clear()
    token = await form_token(gw, path)
    return await post_form(
        gw, path, {"csrf_token": token, field: value}, headers={"X-Forwarded-For": client}
    )


async def answer_of(resp: ClientResponse) -> tuple[int, str, frozenset[str]]:
    """What a client can compare between two answers: status, page (the CSRF token and the
    style nonce, which differ for every request, blanked out) and the headers it got."""
    page = re.sub(r'name="csrf_token" value="[^"]*"', "", await resp.text())
    page = re.sub(r'nonce="[^"]*"', 'nonce=""', page)
    volatile = {"date", "x-request-id", "content-length"}
    return resp.status, page, frozenset(name.lower() for name in resp.headers) - volatile


async def patrons(pool: asyncpg.Pool, hasher: PasswordHasher, n: int) -> list[Account]:
    return [await add_patron(pool, hasher) for _ in range(n)]


async def mailed(gw: Gateway, pool: asyncpg.Pool, among: list[Account]) -> list[Account]:
    """Which of `among` the gateway queued a mail for, once its work after the answers is
    done (in `among`'s order)."""
    await settle(gw)
    rows = await pool.fetch(
        "SELECT recipient FROM outbox WHERE recipient = ANY($1::text[]) FOR UPDATE",
        [patron.email for patron in among],
    )
    got = {row["recipient"] for row in rows}
    return [patron for patron in among if patron.email in got]


async def charge(pool: asyncpg.Pool, client: str, mails: int) -> None:
    """Record `mails` recovery mails asked from `client`, as if it had asked for them just
    now."""
    limits = MailLimits(pool)
    async with pool.acquire() as conn:
        for _ in range(mails):
            await limits.sent(conn, address_key(client))


@pytest.mark.parametrize(
    ("client_of", "elsewhere"),
    [
        pytest.param(lambda n: "198.51.100.7", "198.51.100.8", id="IPv4"),
        pytest.param(
            lambda n: f"2001:db8:7:9::{n + 1:x}", "2001:db8:7:a::1", id="IPv6-counted-per-64"
        ),
    ],
)
async def test_one_address_gets_reset_mail_sent_to_at_most_forty_accounts_an_hour(
    proxied: Gateway,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    client_of: Callable[[int], str],
    elsewhere: str,
) -> None:
    """A mail cannon aimed at many patrons from one address (ASVS 11.1.4: anti-automation
    against excessive calls; 2.5.x recovery must not be abusable): past the address's limit
    every answer stays the same and no mail is queued. IPv6 is counted per /64, since one
    machine can hold a whole /64; another address is not held back by it."""
    victims = await patrons(pool, hasher, PER_HOUR.mails + 3)
    answers = {
        await answer_of(await ask(proxied, FORGOT_PASSWORD, victim.username, client_of(n)))
        for n, victim in enumerate(victims)
    }
    assert len(answers) == 1 and next(iter(answers))[0] == 200
    got = await mailed(proxied, pool, victims)
    assert len(got) == PER_HOUR.mails
    spared, *_, last = [victim for victim in victims if victim not in got]

    assert (await ask(proxied, FORGOT_PASSWORD, spared.username, elsewhere)).status == 200
    assert await mailed(proxied, pool, [spared]) == [spared]
    # The window slides on: an hour after those mails the address may ask again.
    await pool.execute(
        "UPDATE recovery_mails SET sent_at = sent_at - interval '1 hour' WHERE key = $1",
        address_key(client_of(0)),
    )
    assert (await ask(proxied, FORGOT_PASSWORD, last.username, client_of(0))).status == 200
    assert await mailed(proxied, pool, [last]) == [last]


async def test_both_forms_draw_on_one_address_limit_even_asked_all_at_once(
    proxied: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """The forgotten-username form is no way around the address's limit, alone or mixed with
    resets, nor are simultaneous requests that each count before any of the others has sent
    its mail (ASVS 11.1.4, 11.1.6: concurrency)."""
    client = "203.0.113.45"
    victims = await patrons(pool, hasher, PER_HOUR.mails + 4)
    half = len(victims) // 2
    csrf = await form_token(proxied, FORGOT_PASSWORD[0])
    asked = [(FORGOT_PASSWORD, victim.username) for victim in victims[:half]] + [
        (FORGOT_USERNAME, victim.email or "") for victim in victims[half:]
    ]
    answers = await asyncio.gather(
        *(
            post_form(
                proxied,
                path,
                {"csrf_token": csrf, field: value},
                headers={"X-Forwarded-For": client},
            )
            for (path, field), value in asked
        )
    )
    assert {resp.status for resp in answers} == {200}
    assert len(await mailed(proxied, pool, victims)) == PER_HOUR.mails


async def test_one_address_gets_at_most_a_hundred_and_twenty_mails_a_day(
    proxied: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """A patient cannon that stays under the hourly limit, hour after hour, is stopped by the
    daily one."""
    client = "192.0.2.77"
    earlier_today = PER_DAY.mails - 20
    await charge(pool, client, earlier_today)
    await pool.execute(
        "UPDATE recovery_mails SET sent_at = sent_at - interval '5 hours' WHERE key = $1",
        address_key(client),
    )
    victims = await patrons(pool, hasher, 25)
    for victim in victims:
        assert (await ask(proxied, FORGOT_USERNAME, victim.email or "", client)).status == 200
    assert len(await mailed(proxied, pool, victims)) == PER_DAY.mails - earlier_today


@pytest.mark.parametrize(
    ("form", "kind"),
    [
        pytest.param(FORGOT_PASSWORD, "reset", id="forgot-password"),
        pytest.param(FORGOT_USERNAME, "forgot_username", id="forgot-username"),
    ],
)
async def test_one_patron_asked_for_from_many_addresses_gets_at_most_three_mails(
    proxied: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, form: tuple[str, str], kind: str
) -> None:
    """Bombing one patron's mailbox from many addresses (a botnet, or one attacker hopping
    through a /64): the per-address limit never comes into it, the account's does, whichever
    spelling of the account or address is asked for (ASVS 11.1.4)."""
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    if form == FORGOT_PASSWORD:
        spellings = [patron.username, patron.pass_number, patron.email, patron.username.upper()]
    else:
        spellings = [patron.email, patron.email.upper(), f" {patron.email} "]
    answers = set()
    for n in range(8):
        resp = await ask(proxied, form, spellings[n % len(spellings)], f"198.51.100.{100 + n}")
        answers.add(await answer_of(resp))
    assert len(answers) == 1 and next(iter(answers))[0] == 200
    await settle(proxied)
    subject = mail_subject(kind)
    mails = [row for row in await outbox_for(pool, patron.email) if row["subject"] == subject]
    assert len(mails) == LIMITS.per_account.mails == 3


@pytest.mark.parametrize(
    ("form", "value_of"),
    [
        pytest.param(FORGOT_PASSWORD, lambda patron: patron.username, id="forgot-password"),
        pytest.param(FORGOT_USERNAME, lambda patron: str(patron.email), id="forgot-username"),
    ],
)
async def test_a_withheld_mail_is_answered_exactly_like_a_sent_one_and_an_unknown_account(
    proxied: Gateway,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    form: tuple[str, str],
    value_of: Callable[[Account], str],
) -> None:
    """Neither the limits nor the accounts show through the answer (ASVS 2.5.6, 11.1.4): a
    mail sent, one held back by the account's limit, one held back by the address's limit
    and a request for nobody get the same status, page and headers; the limits are checked
    only in the work done after the answer."""
    client, spent_client = "198.51.100.60", "198.51.100.61"
    patron, other = await patrons(pool, hasher, 2)
    await charge(pool, spent_client, PER_HOUR.mails)
    unknown = f"nobody{unique_pass_number()}@example.org"
    seen = {
        "sent": await answer_of(await ask(proxied, form, value_of(patron), client)),
        "unknown": await answer_of(await ask(proxied, form, unknown, client)),
    }
    for _ in range(LIMITS.per_account.mails - 1):
        await ask(proxied, form, value_of(patron), client)
    limited = await ask(proxied, form, value_of(patron), client)
    seen["limited_account"] = await answer_of(limited)
    limited = await ask(proxied, form, value_of(other), spent_client)
    seen["limited_address"] = await answer_of(limited)
    assert seen["sent"][0] == 200
    assert all(answer == seen["sent"] for answer in seen.values()), seen.keys()
    # And each case was what it claims to be.
    assert await mailed(proxied, pool, [patron, other]) == [patron]
    assert patron.email is not None
    assert len(await outbox_for(pool, patron.email)) == LIMITS.per_account.mails
