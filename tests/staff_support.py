"""Helpers the staff console's tests share: staff members made straight in the database
(activated, with a password and a TOTP app), and signing in through the real pages.

The TOTP codes are computed from the member's secret the way an authenticator app would.
A member signs in many times within one 30-second step in a test run, so `sign_in` first
forgets the last step accepted (as if the step had passed): the replay tests do not."""

from __future__ import annotations

import itertools
import re
import secrets
import time
from dataclasses import dataclass
from typing import Protocol

from aiohttp import ClientResponse, web

from auth.staff import recovery, totp
from auth.staff.services import STAFF_SERVICES, StaffServices
from auth.staff.sessions import COOKIE_NAME, FORM_COOKIE_NAME
from tests.helpers import PASSWORD, Gateway, csrf_in, set_cookies

STAFF_COOKIE = COOKIE_NAME
FORM_COOKIE = FORM_COOKIE_NAME
_numbers = itertools.count(secrets.randbelow(10**9))


@dataclass(frozen=True)
class Member:
    id: str
    email: str
    role: str
    secret: str
    codes: tuple[str, ...]

    def code(self, step_offset: int = 0) -> str:
        return totp.code_at(self.secret, totp.step_at(time.time()) + step_offset)


class Served(Protocol):
    """A test client, or the browser tests' running gateway: whatever holds the app."""

    @property
    def app(self) -> web.Application: ...


def staff_services(client: Served) -> StaffServices:
    return client.app[STAFF_SERVICES]


def unique_email(prefix: str = "staff") -> str:
    return f"{prefix}{next(_numbers)}@library.example.org"


async def add_member(
    client: Served, *, role: str = "helpdesk", email: str | None = None, password: str = PASSWORD
) -> Member:
    """An activated staff member with a password, a TOTP app and ten recovery codes."""
    services = staff_services(client)
    email = email or unique_email(role)
    secret = totp.new_secret()
    codes = recovery.new_codes()
    password_hash = await services.hasher.hash(password)
    async with services.members.transaction() as conn:
        member = await services.members.add(email, role, conn=conn)  # type: ignore[arg-type]
        await services.members.set_password_hash(member.id, password_hash, conn=conn)
        await services.members.mark_activated(member.id, conn=conn)
        await services.factors.add_totp(member.id, services.box.seal(secret), 0, "Phone", conn=conn)
        await services.factors.replace_codes(
            member.id, [recovery.code_hash(member.id, code) for code in codes], conn=conn
        )
    return Member(member.id, email, role, secret, tuple(codes))


async def forget_last_step(client: Gateway, member: Member) -> None:
    await staff_services(client).factors._pool.execute(
        "UPDATE staff_factors SET totp_last_step = 0 WHERE staff_id = $1::uuid", member.id
    )


async def page_token(client: Gateway, path: str) -> str:
    resp = await client.get(path, allow_redirects=False)
    assert resp.status == 200, f"GET {path}: {resp.status}"
    return csrf_in(await resp.text())


async def password_step(
    client: Gateway, email: str, password: str = PASSWORD, **kwargs: object
) -> ClientResponse:
    token = await page_token(client, "/staff/login")
    return await client.post(
        "/staff/login",
        data={"csrf_token": token, "email": email, "password": password},
        allow_redirects=False,
        **kwargs,  # type: ignore[arg-type]
    )


async def code_step(client: Gateway, code: str, method: str = "totp") -> ClientResponse:
    token = await page_token(client, "/staff/login/factor")
    return await client.post(
        "/staff/login/factor",
        data={"csrf_token": token, "method": method, "code": code},
        allow_redirects=False,
    )


async def sign_in(client: Gateway, member: Member, *, fresh: bool = True) -> str:
    """Sign in with password and TOTP code from a fresh browser; returns the session
    cookie's value."""
    if fresh:
        client.session.cookie_jar.clear()
    await forget_last_step(client, member)
    resp = await password_step(client, member.email)
    assert resp.status == 303, await resp.text()
    assert resp.headers["Location"] == "/staff/login/factor"
    resp = await code_step(client, member.code())
    assert resp.status == 303, await resp.text()
    assert resp.headers["Location"] == "/staff/"
    [cookie] = set_cookies(resp, STAFF_COOKIE)
    return cookie.value


def staff_cookie(client: Gateway) -> str | None:
    for morsel in client.session.cookie_jar:
        if morsel.key == STAFF_COOKIE:
            return morsel.value
    return None


def secret_on(page: str) -> str:
    """The TOTP secret the enrolment page shows as text (in groups of four)."""
    found = re.search(r'<code class="secret" id="secret">([A-Z2-7 ]+)</code>', page)
    assert found is not None, "the page shows no secret"
    return found.group(1).replace(" ", "")


def codes_on(page: str) -> list[str]:
    return re.findall(r"<li><code>([0-9a-z-]{19})</code></li>", page)
