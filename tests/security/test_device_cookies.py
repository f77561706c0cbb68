"""A patron's own browser is not locked out by somebody else's guessing (OWASP: device cookies
against account-lockout denial of service).

A browser that has logged in as a patron carries a device cookie; its failures count against
that browser alone, and neither the account's lockout nor the address's limit stops it. Every
attack here is run for real against the login form; blocks are set up through the counters
the throttle keeps, never by waiting.
"""

from __future__ import annotations

import asyncio
from typing import cast

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from cryptography.fernet import Fernet
from pytest_aiohttp import AiohttpClient

from auth.credentials.passwords import PasswordHasher
from auth.store.accounts import Account
from gateway.demo.mailcatcher import MailCatcher
from tests.helpers import (
    DEVICE_COOKIE,
    PASSWORD,
    Gateway,
    MakeGateway,
    add_patron,
    attempt,
    attempt_on_device,
    device_after_login,
    form_token,
    ledger,
    link_in,
    mail_for,
    post_form,
    routes_for,
    set_cookies,
    settle,
    token_of,
    unique_pass_number,
)


@pytest.fixture
async def gw(make_gateway: MakeGateway, backend: TestServer) -> Gateway:
    return await make_gateway(routes_for(backend.port))


async def block_account_from_elsewhere(gw: Gateway, patron: Account) -> None:
    """An attacker without the patron's browser guesses until the account is blocked."""
    statuses = [(await attempt(gw, patron.username, f"guess {n}"))[0] for n in range(6)]
    assert statuses == [401] * 5 + [429]
    assert (await attempt(gw, patron.username, PASSWORD))[0] == 429


async def test_a_login_leaves_a_device_cookie_only_the_login_pages_receive(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    token = await form_token(gw)
    resp = await post_form(
        gw, "/auth/login", {"csrf_token": token, "username": patron.username, "password": PASSWORD}
    )
    assert resp.status == 303
    [cookie] = set_cookies(resp, DEVICE_COOKIE)
    assert cookie["path"] == "/auth/"  # backends never see it
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Strict"
    assert int(cookie["max-age"]) == 365 * 86400
    assert patron.id not in cookie.value and patron.username not in cookie.value


async def test_the_patrons_own_browser_gets_in_while_the_account_is_blocked_for_others(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    own = await device_after_login(gw, patron.username)
    await block_account_from_elsewhere(gw, patron)
    assert (await attempt(gw, patron.username, PASSWORD, device=own))[0] == 303
    # The attacker is still blocked: the patron's success did not clear the account's block.
    assert (await attempt(gw, patron.username, PASSWORD))[0] == 429


async def test_failures_from_a_trusted_browser_count_against_that_browser_alone(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    own = await device_after_login(gw, patron.username)
    statuses = [(await attempt(gw, patron.username, f"typo {n}", device=own))[0] for n in range(11)]
    assert statuses == [401] * 10 + [429]
    counters = await ledger(pool)
    assert f"account:{patron.id}" not in counters and "addr:127.0.0.1" not in counters
    # Another browser of the patron, or a new one, is not held back by that device's block.
    assert (await attempt(gw, patron.username, PASSWORD))[0] == 303


async def test_a_device_cookie_vouches_only_for_the_account_it_was_given_for(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    attacker = await add_patron(pool, hasher)
    victim = await add_patron(pool, hasher)
    attackers_device = await device_after_login(gw, attacker.username)
    await block_account_from_elsewhere(gw, victim)
    assert (await attempt(gw, victim.username, PASSWORD, device=attackers_device))[0] == 429


@pytest.mark.parametrize(
    "forged",
    [
        "",
        "not-a-token",
        "gAAAAA" + "A" * 200,
        Fernet(Fernet.generate_key())
        .encrypt(b'[["00000000-0000-0000-0000-000000000000",0,"x"]]')
        .decode(),
    ],
    ids=["empty", "garbage", "fernet-shaped", "foreign-key"],
)
async def test_a_forged_device_cookie_is_an_unknown_browser(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, forged: str
) -> None:
    patron = await add_patron(pool, hasher)
    await block_account_from_elsewhere(gw, patron)
    assert (await attempt(gw, patron.username, PASSWORD, device=forged))[0] == 429


async def test_a_tampered_device_cookie_is_an_unknown_browser(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    own = await device_after_login(gw, patron.username)
    await block_account_from_elsewhere(gw, patron)
    flipped = own[:40] + ("A" if own[40] != "A" else "B") + own[41:]
    assert (await attempt(gw, patron.username, PASSWORD, device=flipped))[0] == 429


async def test_a_password_change_voids_every_device_cookie_of_the_patron(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    old_device = await device_after_login(gw, patron.username)
    # The patron (or a thief with the password) changes the password from a new browser.
    status, _, current = await attempt_on_device(gw, patron.username, PASSWORD)
    assert status == 303
    token = await form_token(gw, "/auth/account")
    new_password = "a completely new passphrase"
    changed = await post_form(
        gw,
        "/auth/account/password",
        {"csrf_token": token, "current_password": PASSWORD, "new_password": new_password},
    )
    assert changed.status == 303
    await block_account_from_elsewhere(gw, patron)
    assert (await attempt(gw, patron.username, new_password, device=old_device))[0] == 429
    assert (await attempt(gw, patron.username, new_password, device=current))[0] == 429


async def test_a_password_reset_voids_every_device_cookie_of_the_patron(
    mailing_gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, mail_catcher: MailCatcher
) -> None:
    """A reset is what a patron does who fears somebody else knows the password: every
    browser that logged in before must prove itself again."""
    gw = mailing_gw
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    old_device = await device_after_login(gw, patron.username)
    gw.session.cookie_jar.clear()
    token = await form_token(gw, "/auth/forgot-password")
    asked = await post_form(
        gw, "/auth/forgot-password", {"csrf_token": token, "identifier": patron.username}
    )
    assert asked.status == 200
    await settle(gw)
    reset_token = token_of(link_in(await mail_for(mail_catcher, patron.email, "reset")))
    new_password = "a completely new passphrase"
    done = await post_form(
        gw,
        "/auth/reset-password",
        {
            "csrf_token": await form_token(gw, "/auth/forgot-password"),
            "token": reset_token,
            "new_password": new_password,
        },
    )
    assert done.status == 303
    await block_account_from_elsewhere(gw, patron)
    assert (await attempt(gw, patron.username, new_password, device=old_device))[0] == 429


async def test_a_shared_computer_keeps_several_patrons_trusted(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """A family computer or a library PC: each patron who logged in there stays trusted."""
    first, second = await add_patron(pool, hasher), await add_patron(pool, hasher)
    status, _, cookie = await attempt_on_device(gw, first.username, PASSWORD)
    assert status == 303 and cookie is not None
    status, _, cookie = await attempt_on_device(gw, second.username, PASSWORD, device=cookie)
    assert status == 303 and cookie is not None
    await block_account_from_elsewhere(gw, first)
    await block_account_from_elsewhere(gw, second)
    assert (await attempt(gw, first.username, PASSWORD, device=cookie))[0] == 303
    assert (await attempt(gw, second.username, PASSWORD, device=cookie))[0] == 303


async def test_a_blocked_address_never_stops_a_trusted_browser(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    own = await device_after_login(gw, patron.username)
    await pool.execute(
        "INSERT INTO login_throttle (key, failures, score, blocked_until)"
        " VALUES ('addr:127.0.0.1', 500, 500, now() + interval '1 minute')"
    )
    assert (await attempt(gw, patron.username, PASSWORD))[0] == 429
    assert (await attempt(gw, patron.username, PASSWORD, device=own))[0] == 303


async def test_a_reading_room_behind_one_address_gets_in_while_one_client_guesses(
    gw: Gateway, aiohttp_client: AiohttpClient, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """200 patrons behind one address (a reading room, a school, a town's Wi-Fi) log in
    while one client at the same address fails 1,000 times, spraying names and hammering ten
    of the patrons' own accounts. Every patron gets in; the guesser is slowed to a trickle."""
    patrons = [await add_patron(pool, hasher) for _ in range(200)]
    # Each patron has logged in on this device before (the day before, say).
    own = {p.id: await device_after_login(gw, p.username) for p in patrons}
    await pool.execute("DELETE FROM login_throttle")
    # A second client of the same gateway: the room and the guesser keep their own cookies.
    room = cast(Gateway, await aiohttp_client(gw.server))

    async def guesser() -> list[int]:
        statuses = []
        for n in range(1000):
            target = patrons[n % 10].username if n % 2 else f"guess{unique_pass_number()}"
            statuses.append((await attempt(gw, target, f"Password{n}!"))[0])
        return statuses

    async def reading_room() -> list[int]:
        return [(await attempt(room, p.username, PASSWORD, device=own[p.id]))[0] for p in patrons]

    guesses, logins = await asyncio.gather(guesser(), reading_room())
    assert logins == [303] * 200
    assert set(guesses) == {401, 429}
    checked = guesses.count(401)
    # Slowed: past the address's free hundred, a guess is checked about once per block (one
    # second per failure over the hundred, growing), and each hammered account locks after
    # five; the rest are refused without a password being tried.
    assert checked < 150 and guesses.count(429) > 850
