"""The session cookie and the session record: the cookie's flags, every way a cookie can be
wrong, key rotation, idle and absolute lifetimes, and revocation across gateway instances."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from cryptography.fernet import Fernet, MultiFernet

from auth.credentials.passwords import PasswordHasher
from auth.services import SERVICES
from auth.sessions.registry import UNKNOWN, SessionRegistry
from tests.helpers import (
    PASSWORD,
    Gateway,
    MakeGateway,
    account_on,
    add_patron,
    clears_cookie,
    cli,
    csrf_in,
    fetch,
    form_token,
    identity_seen,
    jar_cookie,
    login,
    open_cookie,
    post_form,
    routes_for,
    seal_cookie,
    set_cookies,
)

HOST_COOKIE = "__Host-library_session"


async def sign_in(client: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher) -> tuple[str, str]:
    """A new patron logged in through `client`: (account id, session cookie)."""
    patron = await add_patron(pool, hasher)
    assert (await login(client, patron.username)).status == 303
    cookie = jar_cookie(client)
    assert cookie is not None
    return patron.id, cookie


# --- The cookie's flags -------------------------------------------------------------------------


async def test_cookie_is_httponly_lax_site_wide_and_ends_with_the_browser(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Defends against script access, cross-site sending and a cookie outliving the browser."""
    patron = await add_patron(pool, hasher)
    anonymous = await gw.get("/auth/login")
    logged_in = await post_form(
        gw,
        "/auth/login",
        {
            "csrf_token": csrf_in(await anonymous.text()),
            "username": patron.username,
            "password": PASSWORD,
        },
    )
    assert logged_in.status == 303
    morsels = [*set_cookies(anonymous), *set_cookies(logged_in)]
    assert len(morsels) == 2
    for morsel in morsels:
        assert morsel["httponly"] is True
        assert morsel["samesite"] == "Lax"
        assert morsel["path"] == "/"
        assert morsel["max-age"] == "" and morsel["expires"] == ""
        assert morsel["domain"] == ""
        # Plain-HTTP public URL: a Secure cookie would never come back.
        assert not morsel["secure"]
    assert set_cookies(logged_in, HOST_COOKIE) == []


@pytest.mark.parametrize("page_path", ["/auth/login", "/staff/login"])
@pytest.mark.parametrize(
    ("public_url", "secure"),
    [("https://login.example.org", True), ("http://127.0.0.1:8080", False)],
)
async def test_the_language_cookie_is_secure_exactly_when_the_public_url_is_https(
    make_gateway: MakeGateway, backend: TestServer, public_url: str, secure: bool, page_path: str
) -> None:
    """The language choice is no secret, but over https it must not travel in clear nor be
    set by a plain-http page on the same host, like every other cookie of the gateway's: the
    patrons' pages and the staff console's alike."""
    gw = await make_gateway(routes_for(backend.port), env={"GATEWAY_PUBLIC_URL": public_url})
    page = await gw.get(f"{page_path}?lang=en")
    assert page.status == 200
    [morsel] = set_cookies(page, "library_lang")
    assert morsel.value == "en"
    assert bool(morsel["secure"]) is secure
    assert morsel["httponly"] is True and morsel["samesite"] == "Lax" and morsel["path"] == "/"


async def test_https_public_url_makes_the_cookie_secure_and_host_prefixed(
    make_gateway: MakeGateway, backend: TestServer, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Defends against the cookie travelling over plain HTTP or being planted by a
    sibling subdomain."""
    gw = await make_gateway(
        routes_for(backend.port), env={"GATEWAY_PUBLIC_URL": "https://login.example.org"}
    )
    patron = await add_patron(pool, hasher)
    page = await gw.get("/auth/login")
    [anonymous] = set_cookies(page, HOST_COOKIE)
    assert anonymous["secure"] is True
    gw.session.cookie_jar.clear()
    resp = await gw.post(
        "/auth/login",
        allow_redirects=False,
        headers={"Cookie": f"{HOST_COOKIE}={anonymous.value}"},
        data={
            "csrf_token": csrf_in(await page.text()),
            "username": patron.username,
            "password": PASSWORD,
        },
    )
    assert resp.status == 303
    [morsel] = set_cookies(resp, HOST_COOKIE)
    assert morsel["secure"] is True and morsel["httponly"] is True
    assert morsel["samesite"] == "Lax" and morsel["path"] == "/"
    assert morsel["max-age"] == "" and morsel["expires"] == "" and morsel["domain"] == ""
    assert set_cookies(resp, "library_session") == []
    assert await account_on(gw, morsel.value, name=HOST_COOKIE) == patron.id
    # Under the unprefixed name (as a subdomain could set it) the same value is ignored.
    assert await account_on(gw, morsel.value) is None


# --- Every way a cookie can be wrong ----------------------------------------------------------


def _flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


def _bad_cookie(kind: str, real: str, keys: MultiFernet) -> str:
    data = open_cookie(keys, real)
    session = data["session"]
    now = int(time.time())
    foreign = MultiFernet([Fernet(Fernet.generate_key())])
    forged: dict[str, Callable[[], str]] = {
        "tampered": lambda: _flip(real, len(real) // 2),
        # In the MAC, but clear of the last base64 group (whose spare bits decode alike).
        "tampered_mac": lambda: _flip(real, len(real) - 20),
        "truncated": lambda: real[: len(real) - 12],
        "garbage": lambda: "this-is-not-a-session-cookie",
        "empty": lambda: "",
        "oversized": lambda: "A" * 5000,
        "real_data_foreign_key": lambda: seal_cookie(foreign, data),
        "not_json": lambda: keys.encrypt(b"not json at all").decode(),
        "not_utf8": lambda: keys.encrypt(b'{"session": {"sid": "\xc3\x28"}}').decode(),
        "json_list": lambda: seal_cookie(keys, [data]),
        "json_without_session": lambda: seal_cookie(keys, {"created": now}),
        "session_not_an_object": lambda: seal_cookie(keys, {"created": now, "session": "x"}),
        "invented_sid": lambda: seal_cookie(
            keys, {"created": now, "session": {**session, "sid": secrets.token_urlsafe(32)}}
        ),
        "sid_not_a_string": lambda: seal_cookie(
            keys, {"created": now, "session": {**session, "sid": 12345}}
        ),
        "uid_of_another_account": lambda: seal_cookie(
            keys,
            {"created": now, "session": {**session, "uid": "00000000-0000-0000-0000-000000000001"}},
        ),
    }
    return forged[kind]()


BAD_COOKIES = [
    "tampered",
    "tampered_mac",
    "truncated",
    "garbage",
    "empty",
    "oversized",
    "real_data_foreign_key",
    "not_json",
    "not_utf8",
    "json_list",
    "json_without_session",
    "session_not_an_object",
    "invented_sid",
    "sid_not_a_string",
    "uid_of_another_account",
]


@pytest.mark.parametrize("kind", BAD_COOKIES)
async def test_a_bad_cookie_is_anonymous_and_cleared_never_an_error(
    gw: Gateway,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    cookie_keys: MultiFernet,
    kind: str,
) -> None:
    """Defends against forged, tampered and foreign cookies, and against crashing on them."""
    _, real = await sign_in(gw, pool, hasher)
    bad = _bad_cookie(kind, real, cookie_keys)
    assert bad != real
    required = await fetch(gw, "/reservations/mine", bad)
    assert required.status == 401
    assert (await required.json())["error"] == "authentication_required"
    assert clears_cookie(required)
    optional = await fetch(gw, "/catalogue/search", bad)
    assert optional.status == 200
    assert identity_seen(await optional.json()) == {}
    assert clears_cookie(optional)
    # The real cookie next to all this still works: nothing above touched the session.
    assert await account_on(gw, real) is not None


# --- Key rotation -------------------------------------------------------------------------------


async def test_cookie_keys_rotate_without_logging_anybody_out(
    make_gateway: MakeGateway, backend: TestServer, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    old, new = Fernet(Fernet.generate_key()), Fernet(Fernet.generate_key())
    before = await make_gateway(routes_for(backend.port), keys=MultiFernet([old]))
    account, cookie = await sign_in(before, pool, hasher)
    rotated = await make_gateway(routes_for(backend.port), keys=MultiFernet([new, old]))
    assert await account_on(rotated, cookie) == account
    # Once the old key is dropped, its cookies are just unreadable: anonymous, not an error.
    dropped = await make_gateway(routes_for(backend.port), keys=MultiFernet([new]))
    assert await account_on(dropped, cookie) is None


async def test_a_refreshed_cookie_is_re_encrypted_with_the_newest_key(
    make_gateway: MakeGateway, backend: TestServer, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """The cookies an active patron carries move to the new key before the old one goes."""
    old, new = Fernet(Fernet.generate_key()), Fernet(Fernet.generate_key())
    before = await make_gateway(routes_for(backend.port), keys=MultiFernet([old]))
    account, cookie = await sign_in(before, pool, hasher)
    data = open_cookie(MultiFernet([old]), cookie)
    data["session"]["seen"] -= 120
    data["session"]["iat"] -= 120
    stale = seal_cookie(MultiFernet([old]), data)
    rotated = await make_gateway(routes_for(backend.port), keys=MultiFernet([new, old]))
    [refreshed] = set_cookies(await fetch(rotated, "/reservations/mine", stale))
    assert (
        open_cookie(MultiFernet([new]), refreshed.value)["session"]["sid"] == data["session"]["sid"]
    )
    dropped = await make_gateway(routes_for(backend.port), keys=MultiFernet([new]))
    assert await account_on(dropped, refreshed.value) == account


# --- Idle and absolute lifetimes ----------------------------------------------------------------


def _shifted(keys: MultiFernet, cookie: str, **session: Any) -> str:
    data = open_cookie(keys, cookie)
    data["session"].update(session)
    return seal_cookie(keys, data)


@pytest.mark.parametrize(
    "case",
    [
        "idle",
        "past_lifetime",
        "seen_in_future",
        "iat_in_future",
        "seen_before_iat",
        "seen_not_a_number",
        "iat_missing",
        "seen_is_boolean",
    ],
)
async def test_an_expired_or_impossible_session_time_is_anonymous(
    make_gateway: MakeGateway,
    backend: TestServer,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    cookie_keys: MultiFernet,
    case: str,
) -> None:
    """Defends against replaying an old cookie, and against a cookie that claims a time the
    gateway never wrote."""
    gw = await make_gateway(
        routes_for(backend.port), session_idle_timeout=600.0, session_lifetime=7200.0
    )
    _, cookie = await sign_in(gw, pool, hasher)
    now = int(time.time())
    data = open_cookie(cookie_keys, cookie)
    iat = data["session"]["iat"]
    changes: dict[str, Any] = {
        "idle": {"iat": now - 1000, "seen": now - 600 - 5},
        "past_lifetime": {"iat": now - 7200 - 5, "seen": now},
        "seen_in_future": {"seen": now + 3600},
        "iat_in_future": {"iat": now + 3600, "seen": now + 3600},
        "seen_before_iat": {"seen": iat - 100},
        "seen_not_a_number": {"seen": str(now)},
        "iat_missing": {"iat": None},
        "seen_is_boolean": {"seen": True},
    }[case]
    old = _shifted(cookie_keys, cookie, **changes)
    resp = await fetch(gw, "/reservations/mine", old)
    assert resp.status == 401
    assert clears_cookie(resp)
    assert await account_on(gw, cookie) is not None  # the untouched cookie still works


async def test_just_inside_both_lifetimes_the_session_holds(
    make_gateway: MakeGateway,
    backend: TestServer,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    cookie_keys: MultiFernet,
) -> None:
    """The counterpart of the test above: the limits are where the settings put them."""
    gw = await make_gateway(
        routes_for(backend.port), session_idle_timeout=600.0, session_lifetime=7200.0
    )
    account, cookie = await sign_in(gw, pool, hasher)
    now = int(time.time())
    # 60 s of margin each way, so a slow test machine cannot tip the verdict.
    old = _shifted(cookie_keys, cookie, iat=now - 7200 + 60, seen=now - 600 + 60)
    assert await account_on(gw, old) == account


async def test_activity_is_recorded_in_a_rewritten_cookie(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, cookie_keys: MultiFernet
) -> None:
    """A patron who keeps using the site is not logged out by the idle timeout."""
    account, cookie = await sign_in(gw, pool, hasher)
    data = open_cookie(cookie_keys, cookie)
    quiet = _shifted(
        cookie_keys, cookie, seen=data["session"]["seen"] - 120, iat=data["session"]["iat"] - 120
    )
    resp = await fetch(gw, "/reservations/mine", quiet)
    assert resp.status == 200
    [morsel] = set_cookies(resp)
    refreshed = open_cookie(cookie_keys, morsel.value)["session"]
    assert refreshed["seen"] > data["session"]["seen"] - 120
    assert refreshed["iat"] == data["session"]["iat"] - 120  # the login time never moves
    assert refreshed["sid"] == data["session"]["sid"]
    assert await account_on(gw, morsel.value) == account


async def test_a_client_that_keeps_sending_the_old_cookie_gets_the_same_whole_refresh(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher, cookie_keys: MultiFernet
) -> None:
    """A script that does not store cookies sends the stale one again and again: each answer
    carries the same refreshed cookie (remembered, not re-encrypted), with every attribute."""
    account, cookie = await sign_in(gw, pool, hasher)
    data = open_cookie(cookie_keys, cookie)
    quiet = _shifted(
        cookie_keys, cookie, seen=data["session"]["seen"] - 120, iat=data["session"]["iat"] - 120
    )
    headers = []
    for path in ("/reservations/mine", "/catalogue/search", "/reservations/mine"):
        resp = await fetch(gw, path, quiet)
        assert resp.status == 200
        headers.append(resp.headers.getall("Set-Cookie"))
    assert headers[0] == headers[1] == headers[2]
    [header] = headers[0]
    assert {"HttpOnly", "SameSite=Lax", "Path=/"} <= {part.strip() for part in header.split(";")}
    [morsel] = set_cookies(resp)
    assert await account_on(gw, morsel.value) == account


async def test_a_recently_seen_cookie_is_not_rewritten_on_every_request(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    _, cookie = await sign_in(gw, pool, hasher)
    for path in ("/reservations/mine", "/catalogue/search", "/open/hours"):
        resp = await fetch(gw, path, cookie)
        assert resp.status == 200
        assert "Set-Cookie" not in resp.headers


# --- Revocation ---------------------------------------------------------------------------------


async def logout(client: Gateway, cookie: str) -> None:
    client.session.cookie_jar.clear()
    client.session.cookie_jar.update_cookies({"library_session": cookie})
    token = await form_token(client, "/auth/logout")
    assert (await post_form(client, "/auth/logout", {"csrf_token": token})).status == 303


async def test_a_copied_cookie_dies_with_the_logout(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Defends against a stolen cookie outliving the patron's logout."""
    account, cookie = await sign_in(gw, pool, hasher)
    copy = str(cookie)
    assert await account_on(gw, copy) == account
    await logout(gw, cookie)
    assert await account_on(gw, copy) is None


async def test_a_logout_on_one_instance_ends_the_session_on_another(
    make_gateway: MakeGateway, backend: TestServer, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Defends against a revoked session living on in another instance's cache."""
    first = await make_gateway(routes_for(backend.port))
    second = await make_gateway(routes_for(backend.port))
    account, cookie = await sign_in(first, pool, hasher)
    assert await account_on(second, cookie) == account  # now in the second instance's cache
    registry = second.app[SERVICES].registry
    heard = registry.notified
    await logout(first, cookie)
    await asyncio.wait_for(registry.wait_notified(heard + 1), timeout=30)
    assert await account_on(second, cookie) is None


async def test_disabling_an_account_ends_its_sessions_on_every_instance_at_once(
    make_gateway: MakeGateway,
    backend: TestServer,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    database_url: str,
    tmp_path: Path,
) -> None:
    """A lost pass: the operator's `accounts disable` ends the patron's sessions everywhere at
    once (not when a cache entry runs out), and the account cannot log in until enabled."""
    first = await make_gateway(routes_for(backend.port))
    second = await make_gateway(routes_for(backend.port))
    patron = await add_patron(pool, hasher)
    assert (await login(first, patron.username)).status == 303
    cookie = jar_cookie(first)
    assert cookie is not None
    assert await account_on(second, cookie) == patron.id  # now in the second one's cache
    registry = second.app[SERVICES].registry
    heard = registry.notified
    env = {"GATEWAY_DATABASE_URL": database_url}

    disabled = await asyncio.to_thread(
        cli, "accounts", "disable", "--pass-number", patron.pass_number, env=env, cwd=tmp_path
    )
    assert disabled.returncode == 0, disabled.stderr
    assert "disabled; 1 session ended" in disabled.stdout
    await asyncio.wait_for(registry.wait_notified(heard + 1), timeout=30)
    assert await account_on(second, cookie) is None
    assert await account_on(first, cookie) is None
    first.session.cookie_jar.clear()
    assert (await login(first, patron.username)).status == 401

    enabled = await asyncio.to_thread(
        cli, "accounts", "enable", "--username", patron.username, env=env, cwd=tmp_path
    )
    assert enabled.returncode == 0, enabled.stderr
    assert "enabled" in enabled.stdout
    assert (await login(first, patron.username)).status == 303
    assert await account_on(first, cookie) is None  # the old session stays ended

    unknown = await asyncio.to_thread(
        cli, "accounts", "disable", "--username", "nobody-at-all", env=env, cwd=tmp_path
    )
    assert unknown.returncode == 1
    assert "no account" in unknown.stderr


class HeldPool:
    """The real pool, except that a query's answer is handed over only once `release` is set:
    the network delay of a busy database, made deterministic."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.answered = asyncio.Event()
        self.release = asyncio.Event()

    async def fetchrow(self, query: str, *args: Any) -> asyncpg.Record | None:
        row = await self._pool.fetchrow(query, *args)
        self.answered.set()
        await self.release.wait()
        return row


async def test_a_revocation_heard_during_a_lookup_keeps_its_answer_out_of_the_cache(
    pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """The race behind "revoked at once": this instance reads the session from the database
    just before the logout commits elsewhere, and the logout's notification arrives while
    that answer is still on its way. The answer must not be cached for the next 30 s."""
    patron = await add_patron(pool, hasher)
    held = HeldPool(pool)
    registry = SessionRegistry(held)
    sid = await SessionRegistry(pool).create(patron.id, 3600)
    reading = asyncio.ensure_future(registry.lookup(sid))
    await held.answered.wait()  # the database said "valid"
    await SessionRegistry(pool).revoke_account(patron.id)  # the logout, on another instance
    registry.on_notification("account:" + patron.id)  # heard here, the answer still held
    held.release.set()
    assert (await reading) is not None  # the request that raced the logout
    assert registry.cached(sid) is UNKNOWN
    held.answered.clear()
    assert await registry.lookup(sid) is None


async def test_logging_in_twice_makes_two_independent_sessions(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Logging out on one device does not end the patron's session on another."""
    patron = await add_patron(pool, hasher)
    await login(gw, patron.username)
    laptop = jar_cookie(gw)
    gw.session.cookie_jar.clear()
    await login(gw, patron.username)
    phone = jar_cookie(gw)
    assert laptop is not None and phone is not None and laptop != phone
    await logout(gw, phone)
    assert await account_on(gw, phone) is None
    assert await account_on(gw, laptop) == patron.id


async def test_while_revocations_are_pushed_a_known_session_costs_no_database_read(
    pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Revocation is pushed, not polled: with the LISTEN connection up, a session read once is
    served from memory past the 30 s re-read (here `ttl=0`, so any re-read would show); the
    moment the connection is lost, every entry goes back to being re-read, and one read before
    a reconnect is read again after it (a notification may have been missed in between)."""
    patron = await add_patron(pool, hasher)
    registry = SessionRegistry(pool, ttl=0.0)
    sid = await registry.create(patron.id, 3600)
    registry.listening_up()
    assert await registry.lookup(sid) is not None
    # Ended in the database without a word to this instance: only a read would notice.
    await pool.execute("UPDATE sessions SET revoked_at = now() WHERE account_id = $1", patron.id)
    assert registry.cached(sid) is not UNKNOWN  # trusted: no read
    registry.listening_lost()
    assert registry.cached(sid) is UNKNOWN  # nothing vouches for it any more
    registry.listening_up()
    assert registry.cached(sid) is UNKNOWN
    assert await registry.lookup(sid) is None  # read again: over


async def test_without_the_listening_connection_a_session_is_re_read_after_the_ttl(
    pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    patron = await add_patron(pool, hasher)
    registry = SessionRegistry(pool, ttl=0.0)  # never listening here
    sid = await registry.create(patron.id, 3600)
    assert await registry.lookup(sid) is not None
    assert registry.cached(sid) is UNKNOWN
