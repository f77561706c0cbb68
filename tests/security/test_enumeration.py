"""Finding out who has an account: every answer an anonymous client can get must look the
same whether or not the name, pass number or address belongs to somebody.

"The same" is checked on what a scripted attacker compares: status, body (with the
per-request CSRF token and style nonce blanked out), the set of response headers, whether a
cookie is set, and whether the request spent password-hashing work.
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from auth.credentials.passwords import PasswordHasher
from auth.mail import SmtpTransport
from auth.store.accounts import Account, Accounts
from gateway.demo.mailcatcher import MailCatcher
from tests.conftest import FAST_ARGON2, routes_for
from tests.helpers import PASSWORD, add_patron, form_token, post_form, unique_pass_number
from tests.security.conftest import hasher_held
from tests.security.wire import RecordingBackend

Gateway = Callable[..., Awaitable[TestClient]]

# Headers that differ between any two answers, whoever asked.
_VOLATILE = {"date", "x-request-id", "content-length", "set-cookie"}


@pytest.fixture
async def hasher() -> AsyncIterator[PasswordHasher]:
    """One hashing slot and no queue, so a test can hold it and see who needs it."""
    one_slot = PasswordHasher(max_workers=1, max_queue=0, **FAST_ARGON2)
    yield one_slot
    one_slot.close()


@pytest.fixture
async def gw(
    make_gateway: Gateway, recorder: RecordingBackend, mail_catcher: MailCatcher
) -> TestClient:
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


async def failed_login(gw: TestClient, name: str) -> tuple[int, str, frozenset[str], bool]:
    gw.session.cookie_jar.clear()
    token = await form_token(gw, "/auth/login?lang=en")
    resp = await post_form(
        gw,
        "/auth/login",
        {"csrf_token": token, "username": name, "password": PASSWORD + " but wrong"},
    )
    return await comparable(resp, name)


async def test_every_kind_of_failed_login_gets_the_same_answer(
    gw: TestClient, pool: asyncpg.Pool, hasher: PasswordHasher
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
    gw: TestClient, pool: asyncpg.Pool, hasher: PasswordHasher, kind: str
) -> None:
    """Timing enumeration (Authelia issue 949, fixed by hashing a dummy for unknown users):
    with the only hashing slot held, every kind of attempt is turned away busy (503), which
    shows each one needed the hasher, unknown names included."""
    name = (await kinds_of_account(pool, hasher))[kind]
    gw.session.cookie_jar.clear()
    token = await form_token(gw)
    async with hasher_held(hasher):
        resp = await post_form(
            gw, "/auth/login", {"csrf_token": token, "username": name, "password": "wrong password"}
        )
    assert resp.status == 503
    assert resp.headers["Retry-After"].isdigit()


async def forgot(
    gw: TestClient, path: str, field: str, value: str
) -> tuple[int, str, frozenset[str], bool]:
    gw.session.cookie_jar.clear()
    token = await form_token(gw, f"{path}?lang=en")
    resp = await post_form(gw, path, {"csrf_token": token, field: value})
    return await comparable(resp, value)


async def test_forgot_password_answers_alike_for_every_identifier(
    gw: TestClient, pool: asyncpg.Pool, hasher: PasswordHasher
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
    gw: TestClient, pool: asyncpg.Pool, hasher: PasswordHasher
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
    gw: TestClient, recorder: RecordingBackend
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
