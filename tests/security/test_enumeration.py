"""Finding out who has an account: every answer an anonymous client can get must look the
same whether or not the name, pass number or address belongs to somebody.

"The same" is checked on what a scripted attacker compares: status, body (with the
per-request CSRF token and style nonce blanked out), the set of response headers, whether a
cookie is set, and the password-hashing work the request cost (which its time would show).
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from typing import Any, Literal

import argon2
import asyncpg
import pytest
from aiohttp import ClientResponse

from auth.credentials.passwords import PasswordHasher
from auth.mail import SmtpTransport
from auth.store.accounts import Account, Accounts
from gateway.demo.mailcatcher import MailCatcher
from tests.helpers import (
    FAST_ARGON2,
    PASSWORD,
    Gateway,
    MakeGateway,
    add_patron,
    form_token,
    post_form,
    routes_for,
    unique_pass_number,
)
from tests.security.wire import RecordingBackend

# Headers that differ between any two answers, whoever asked.
_VOLATILE = {"date", "x-request-id", "content-length", "set-cookie"}


class CountingArgon2(argon2.PasswordHasher):
    """argon2-cffi's hasher, keeping the cost of every hash it verifies a password against."""

    def __init__(self, **costs: Any) -> None:
        super().__init__(**costs)
        self.verified: list[tuple[argon2.Type, int, int, int]] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        found = argon2.extract_parameters(hash if isinstance(hash, str) else hash.decode())
        self.verified.append((found.type, found.time_cost, found.memory_cost, found.parallelism))
        return super().verify(hash, password)


class CountingHasher(PasswordHasher):
    """The gateway's hasher, whose argon2 work is counted: its argon2 engine is swapped for
    one that counts, with the same costs."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        engine = self._argon2
        assert isinstance(engine, argon2.PasswordHasher), "the hasher's argon2 engine moved"
        self.argon2 = CountingArgon2(
            time_cost=engine.time_cost,
            memory_cost=engine.memory_cost,
            parallelism=engine.parallelism,
            type=engine.type,
        )
        self._argon2 = self.argon2


# One verification at the cost every password of this test's accounts was hashed with.
ONE_CHECK_AT_THE_ACCOUNTS_COST = [
    (
        argon2.Type.ID,
        FAST_ARGON2["time_cost"],
        FAST_ARGON2["memory_cost"],
        FAST_ARGON2["parallelism"],
    )
]


@pytest.fixture
async def hasher() -> AsyncIterator[CountingHasher]:
    counting = CountingHasher(max_workers=2, **FAST_ARGON2)
    yield counting
    counting.close()


@pytest.fixture
async def gw(
    make_gateway: MakeGateway, recorder: RecordingBackend, mail_catcher: MailCatcher
) -> Gateway:
    return await make_gateway(
        routes_for(recorder.port), mail_transport=SmtpTransport(mail_catcher.url)
    )


async def comparable(resp: ClientResponse, *echoed: str) -> tuple[int, str, frozenset[str], bool]:
    """What an attacker can compare between two answers, with what legitimately differs
    (the CSRF token, the style nonce, the name the patron typed in) blanked out."""
    page = await resp.text()
    page = re.sub(r'name="csrf_token" value="[^"]*"', "", page)
    page = re.sub(r'nonce="[^"]*"', 'nonce=""', page)
    for value in echoed:
        page = page.replace(html.escape(value), "ECHO")
    headers = frozenset(name.lower() for name in resp.headers) - _VOLATILE
    return resp.status, page, headers, "Set-Cookie" in resp.headers


async def kinds_of_account(pool: asyncpg.Pool, hasher: PasswordHasher) -> dict[str, str]:
    """One login name for each kind of account an attacker might probe for."""
    active = await add_patron(pool, hasher)
    disabled = await add_patron(pool, hasher)
    await pool.execute("UPDATE accounts SET disabled = true WHERE id = $1::uuid", disabled.id)
    number = unique_pass_number()
    invited: Account = await Accounts(pool).add(
        pass_number=number, email=f"invited{number}@example.org"
    )
    return {
        "unknown": f"nobody{unique_pass_number()}",
        "active-wrong-password": active.username,
        "active-by-pass-number": active.pass_number,
        "disabled": disabled.username,
        "invited-without-password": invited.username,
    }


async def failed_login(gw: Gateway, name: str) -> tuple[int, str, frozenset[str], bool]:
    gw.session.cookie_jar.clear()
    token = await form_token(gw, "/auth/login?lang=en")
    resp = await post_form(
        gw,
        "/auth/login",
        {"csrf_token": token, "username": name, "password": PASSWORD + " but wrong"},
    )
    return await comparable(resp, name)


async def test_every_kind_of_failed_login_gets_the_same_answer(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Account enumeration through the login form: unknown name, wrong password, disabled
    account and an invited member without a password are indistinguishable (Authelia issue
    949; oauth2-proxy's sign-in page answers alike for the same reason; ASVS 2.2.1)."""
    names = await kinds_of_account(pool, hasher)
    answers = {kind: await failed_login(gw, name) for kind, name in names.items()}
    baseline = answers.pop("unknown")
    assert baseline[0] == 401
    for kind, answer in answers.items():
        assert answer == baseline, kind


@pytest.mark.parametrize(
    "kind",
    [
        "unknown",
        "active-wrong-password",
        "active-by-pass-number",
        "disabled",
        "invited-without-password",
    ],
)
async def test_every_kind_of_failed_login_spends_the_same_hashing_work(
    gw: Gateway, pool: asyncpg.Pool, hasher: CountingHasher, kind: str
) -> None:
    """Timing enumeration (Authelia issue 949, fixed by hashing a dummy for unknown users):
    every kind of failed login costs exactly one argon2 verification, at the cost a real
    account's password check has, unknown names and accounts without a password included."""
    name = (await kinds_of_account(pool, hasher))[kind]
    gw.session.cookie_jar.clear()
    token = await form_token(gw)
    hasher.argon2.verified.clear()
    resp = await post_form(
        gw, "/auth/login", {"csrf_token": token, "username": name, "password": "wrong password"}
    )
    assert resp.status == 401
    assert hasher.argon2.verified == ONE_CHECK_AT_THE_ACCOUNTS_COST


async def forgot(
    gw: Gateway, path: str, field: str, value: str
) -> tuple[int, str, frozenset[str], bool]:
    gw.session.cookie_jar.clear()
    token = await form_token(gw, f"{path}?lang=en")
    resp = await post_form(gw, path, {"csrf_token": token, field: value})
    return await comparable(resp, value)


async def test_forgot_password_answers_alike_for_every_identifier(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """The reset form must not confirm that a name, pass number or address exists (ASVS
    2.5.6: a secure recovery path; Authelia returns the same for unknown users)."""
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    probes = [
        patron.username,
        patron.pass_number,
        patron.email,
        patron.email.upper(),
        f"nobody{unique_pass_number()}",
        f"nobody{unique_pass_number()}@example.org",
    ]
    answers = [await forgot(gw, "/auth/forgot-password", "identifier", probe) for probe in probes]
    assert answers[0][0] == 200
    assert all(answer == answers[0] for answer in answers)


async def test_forgot_username_answers_alike_for_known_and_unknown_addresses(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """The same for the forgotten-username form, which takes only an e-mail address."""
    patron = await add_patron(pool, hasher)
    assert patron.email is not None
    answers = [
        await forgot(gw, "/auth/forgot-username", "email", probe)
        for probe in (patron.email, f"nobody{unique_pass_number()}@example.org")
    ]
    assert answers[0][0] == 200
    assert answers[0] == answers[1]


async def test_a_required_route_refuses_before_the_backend_can_tell_what_exists(
    gw: Gateway, recorder: RecordingBackend
) -> None:
    """Anonymous probing of a protected service learns nothing about its paths: the gateway
    answers every one of them the same way, without asking the backend (ASVS 1.4.1, 4.1.1)."""
    answers = []
    for path in (
        "/reservations/mine",
        "/reservations/admin",
        "/reservations/no-such-page",
        "/reservations/mine?id=1",
    ):
        resp = await gw.get(path, headers={"Accept": "application/json"}, allow_redirects=False)
        body = await resp.json()
        answers.append((resp.status, body["error"]))
    assert answers == [(401, "authentication_required")] * 4
    assert recorder.requests == []
