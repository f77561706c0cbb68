"""Steps the login, session and identity tests share: make a patron, read a form's CSRF
token, log in through the real form, and read or forge the session cookie.

Forging uses the gateway's own cookie format (aiohttp-session's `{"created": …, "session":
{…}}`, encrypted with the test's MultiFernet), so a test can move a timestamp without waiting
for it to pass.
"""

from __future__ import annotations

import itertools
import json
import re
import secrets
from http.cookies import Morsel, SimpleCookie
from typing import Any

import asyncpg
import markupsafe
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from cryptography.fernet import MultiFernet

from auth.credentials.passwords import PasswordHasher
from auth.pages import i18n
from auth.store.accounts import Account, Accounts

COOKIE = "library_session"
PASSWORD = "correct horse battery staple"

# A random start per process, so pass numbers never repeat within a module's shared database.
_numbers = itertools.count(10**9 + secrets.randbelow(10**9))
_CSRF = re.compile(r'name="csrf_token" value="([^"]*)"')


def unique_pass_number() -> str:
    return str(next(_numbers))


async def add_patron(
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    *,
    username: str | None = None,
    password: str = PASSWORD,
    pass_number: str | None = None,
    password_hash: str | None = None,
) -> Account:
    number = pass_number or unique_pass_number()
    return await Accounts(pool).add(
        pass_number=number,
        email=f"patron{number}@example.org",
        username=username or f"reader{number}",
        password_hash=password_hash or await hasher.hash(password),
    )


def csrf_in(page: str) -> str:
    found = _CSRF.search(page)
    assert found is not None, "the page has no csrf_token field"
    return found.group(1)


async def form_token(client: TestClient, path: str = "/auth/login") -> str:
    """GET a form page (which also sets the session cookie) and return its CSRF token."""
    resp = await client.get(path)
    assert resp.status == 200
    return csrf_in(await resp.text())


async def post_form(
    client: TestClient, path: str, fields: dict[str, str], **kwargs: Any
) -> ClientResponse:
    return await client.post(path, data=fields, allow_redirects=False, **kwargs)


async def login(
    client: TestClient, name: str, password: str = PASSWORD, next: str | None = None
) -> ClientResponse:
    """Log in through the real form: fetch it for the token, then post it."""
    fields = {"csrf_token": await form_token(client), "username": name, "password": password}
    if next is not None:
        fields["next"] = next
    return await post_form(client, "/auth/login", fields)


def jar_cookie(client: TestClient, name: str = COOKIE) -> str | None:
    """The session cookie the client's jar holds now."""
    for morsel in client.session.cookie_jar:
        if morsel.key == name:
            return morsel.value
    return None


def set_cookies(resp: ClientResponse, name: str = COOKIE) -> list[Morsel[str]]:
    """Every Set-Cookie of `resp` for cookie `name`, parsed."""
    found = []
    for header in resp.headers.getall("Set-Cookie", ()):
        parsed: SimpleCookie = SimpleCookie()
        parsed.load(header)
        if name in parsed:
            found.append(parsed[name])
    return found


def clears_cookie(resp: ClientResponse, name: str = COOKIE) -> bool:
    return any(m.value in ("", '""') or m["max-age"] == "0" for m in set_cookies(resp, name))


async def fetch(
    client: TestClient,
    path: str,
    cookie: str | None,
    *,
    name: str = COOKIE,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> ClientResponse:
    """A request carrying exactly this session cookie (or none): the jar is emptied first so
    nothing it collected earlier rides along."""
    client.session.cookie_jar.clear()
    sent = {"Accept": "application/json", **(headers or {})}
    if cookie is not None:
        sent["Cookie"] = f"{name}={cookie}"
    return await client.request(method, path, headers=sent, allow_redirects=False, **kwargs)


async def account_on(client: TestClient, cookie: str | None, *, name: str = COOKIE) -> str | None:
    """The account id a required route's backend is given for this cookie; None when the
    gateway refuses the request as anonymous."""
    resp = await fetch(client, "/reservations/mine", cookie, name=name)
    if resp.status == 401:
        assert (await resp.json())["error"] == "authentication_required"
        return None
    assert resp.status == 200
    return identity_seen(await resp.json())["x-library-user-id"]


def received(payload: dict[str, Any]) -> dict[str, list[str]]:
    """The echo backend's headers, by lower-case name."""
    out: dict[str, list[str]] = {}
    for key, value in payload["headers"]:
        out.setdefault(key.lower(), []).append(value)
    return out


def identity_seen(payload: dict[str, Any]) -> dict[str, str]:
    """The X-Library-* headers the backend got (one value each, or the test fails)."""
    seen = received(payload)
    out = {}
    for key, values in seen.items():
        if key.startswith("x-library-"):
            assert len(values) == 1, f"{key} arrived {len(values)} times"
            out[key] = values[0]
    return out


def open_cookie(keys: MultiFernet, cookie: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(keys.decrypt(cookie.encode("ascii")))
    return data


def seal_cookie(keys: MultiFernet, data: object) -> str:
    return keys.encrypt(json.dumps(data).encode()).decode("ascii")


def page_text(key: str) -> str:
    """A text of the pages in the default language, as a page shows it (HTML-escaped, the
    way Jinja escapes it)."""
    return str(markupsafe.escape(i18n.translator(i18n.DEFAULT)[key]))
