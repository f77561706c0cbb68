"""The demo's second library, Bibliotheek Rivierenland: its own site on 127.0.0.2 that logs
patrons in through the gateway with Authlib. One login serves both ways: a patron logged in at
the catalogue walks into the site without a login form, and one who logs in for the site is
logged in at the catalogue too.

The gateway and the site are real servers on loopback, each on a socket bound before its
application is made: the gateway's issuer is its public URL, which the site must reach, and
the site's redirect URI is in the gateway's client list, so both ports are needed first. The
patron is an aiohttp session with its own cookie jar, which keeps cookies per host as a
browser does, so the site's and the gateway's never mix. A logout at the gateway reaches the
site by back-channel logout; what the site answered is watched on its responses, so the tests
wait for that answer rather than for time to pass.
"""

from __future__ import annotations

import asyncio
import base64
import html
import json
import re
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.fernet import MultiFernet
from cryptography.hazmat.primitives.asymmetric import rsa
from yarl import URL

from auth.credentials.passwords import PasswordHasher
from auth.memberships import Membership
from auth.signing import KeyStore
from auth.store.accounts import Account
from auth.store.memberships import Memberships
from gateway.app import create_app
from gateway.config.clients_file import parse_clients
from gateway.config.institutions_file import parse_institutions
from gateway.config.reload import ClientMap, InstitutionMap, RouteMap
from gateway.config.routes_file import parse_routes
from gateway.config.settings import Settings
from gateway.demo import public_library
from gateway.demo.runner import (
    DEMO_CLIENTS,
    DEMO_INSTITUTIONS,
    PUBLIC_LIBRARY_ID,
    PUBLIC_LIBRARY_INSTITUTION,
    PUBLIC_LIBRARY_SECRET_ENV,
)
from gateway.server.runner import GatewayRunner
from tests.helpers import COOKIE, PASSWORD, add_patron, csrf_in, identity_seen, routes_for

SECRET = "rivierenland-" + "s" * 40
LOGIN_FORM = "/auth/login"
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


@dataclass(frozen=True)
class Servers:
    """Where each one answers: its origin, without a path (the gateway's is its issuer)."""

    gateway: URL
    library: URL
    backchannel: asyncio.Queue[int]
    """The status of each answer the site gave to a back-channel logout, in order."""


async def _serve(runner: web.AppRunner, sock: socket.socket) -> None:
    await runner.setup()
    await web.SockSite(runner, sock).start()


@pytest.fixture
async def servers(
    database_url: str, cookie_keys: MultiFernet, hasher: PasswordHasher, backend: TestServer
) -> AsyncIterator[Servers]:
    gateway_socket = public_library.listening_socket("127.0.0.1")
    library_socket = public_library.listening_socket()
    gateway = URL(f"http://127.0.0.1:{gateway_socket.getsockname()[1]}")
    library = URL(f"http://{public_library.HOST}:{library_socket.getsockname()[1]}")
    institutions = InstitutionMap(parse_institutions(DEMO_INSTITUTIONS))
    routes = parse_routes(routes_for(backend.port), "routes.yaml", institutions.table)
    route_map = RouteMap(routes, institutions=institutions)
    clients = parse_clients(
        DEMO_CLIENTS.format(site=library),
        env={PUBLIC_LIBRARY_SECRET_ENV: SECRET},
        routes=routes,
        institutions=institutions.table,
    )
    app = create_app(
        Settings.from_env({}, public_url=str(gateway)),
        route_map,
        database_url=database_url,
        cookie_keys=cookie_keys,
        hasher=hasher,
        client_map=ClientMap(clients, routes=route_map, institutions=institutions),
        institution_map=institutions,
    )
    registration = public_library.Registration(
        issuer=str(gateway),
        client_id=PUBLIC_LIBRARY_ID,
        client_secret=SECRET,
        redirect_uri=str(library / "callback"),
    )
    backchannel: asyncio.Queue[int] = asyncio.Queue()

    async def answered(request: web.Request, response: web.StreamResponse) -> None:
        if request.path == public_library.BACKCHANNEL_LOGOUT_PATH:
            backchannel.put_nowait(response.status)

    site = public_library.public_library_app(registration)
    site.on_response_prepare.append(answered)
    runners = [GatewayRunner(app, access_log=None), web.AppRunner(site, access_log=None)]
    try:
        for runner, sock in zip(runners, (gateway_socket, library_socket), strict=True):
            await _serve(runner, sock)
        yield Servers(gateway, library, backchannel)
    finally:
        for runner in runners:
            await runner.cleanup()
        gateway_socket.close()
        library_socket.close()


@pytest.fixture
async def patron(pool: asyncpg.Pool, hasher: PasswordHasher) -> Account:
    """A patron of the public library too (its site requires that)."""
    account = await add_patron(pool, hasher)
    await Memberships(pool).add(
        account.id, Membership(PUBLIC_LIBRARY_INSTITUTION, "RL-" + account.pass_number)
    )
    return account


async def test_a_patron_without_a_pass_of_the_public_library_is_not_logged_in_there(
    servers: Servers, browser: aiohttp.ClientSession, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    outsider = await add_patron(pool, hasher)
    form = await browser.get(servers.library / "login")
    refused = await fill_in_login(browser, form, outsider)
    # Sent back to the site with access_denied, once: no second login form, no loop.
    assert refused.status == 400 and refused.url.path == "/callback"
    text = html.unescape(await refused.text())
    assert "You are not logged in" in text
    assert f"no valid membership of {public_library.NAME}" in text
    assert [r.url.path for r in refused.history] == [LOGIN_FORM, "/auth/oidc/authorize"]
    # The gateway login itself holds: the catalogue knows the patron.
    catalogue = await browser.get(servers.gateway / "catalogue" / "")
    assert identity_seen(await catalogue.json())["x-library-username"] == outsider.username


@pytest.fixture
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """One patron's browser; unsafe=True keeps cookies of IP-address hosts, as browsers do."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        yield session


async def fill_in_login(
    browser: aiohttp.ClientSession, page: aiohttp.ClientResponse, patron: Account
) -> aiohttp.ClientResponse:
    """Send the gateway's login form `page` shows, as the patron, following the redirects."""
    fields = {name: html.unescape(value) for name, value in _HIDDEN.findall(await page.text())}
    fields.update(username=patron.username, password=PASSWORD)
    return await browser.post(page.url.with_path(LOGIN_FORM).with_query(None), data=fields)


def paths(resp: aiohttp.ClientResponse) -> list[str]:
    """Every URL on the way to `resp` and its own, without query."""
    return [str(r.url.with_query(None)) for r in (*resp.history, resp)]


async def test_a_patron_logged_in_at_the_catalogue_walks_in_without_a_login_form(
    servers: Servers, browser: aiohttp.ClientSession, patron: Account
) -> None:
    catalogue = await browser.get(
        (servers.gateway / "auth" / "login").with_query(next="/catalogue/")
    )
    at_catalogue = await fill_in_login(browser, catalogue, patron)
    assert at_catalogue.status == 200 and at_catalogue.url.path == "/catalogue/"
    assert identity_seen(await at_catalogue.json())["x-library-username"] == patron.username

    home = await browser.get(servers.library.with_path("/"))
    assert "Log in with your library account" in await home.text()
    arrived = await browser.get(servers.library / "login")
    assert arrived.status == 200, await arrived.text()
    assert arrived.url == servers.library.with_path("/")
    assert paths(arrived) == [
        str(servers.library / "login"),
        str(servers.gateway / "auth" / "oidc" / "authorize"),
        str(servers.library / "callback"),
        str(servers.library.with_path("/")),
    ]
    page = await arrived.text()
    assert patron.username in page and patron.pass_number in page and patron.id in page
    # Cookies stay with their host: the gateway's session never reaches the site.
    assert COOKIE not in browser.cookie_jar.filter_cookies(servers.library)
    assert public_library.SESSION_COOKIE not in browser.cookie_jar.filter_cookies(servers.gateway)


async def test_a_patron_not_logged_in_logs_in_on_the_gateways_form_in_the_librarys_colours(
    servers: Servers, browser: aiohttp.ClientSession, patron: Account
) -> None:
    form = await browser.get(servers.library / "login")
    assert form.status == 200 and form.url.origin() == servers.gateway
    assert form.url.path == LOGIN_FORM
    text = await form.text()
    assert public_library.NAME in text and public_library.HOUSE_COLOUR in text

    arrived = await fill_in_login(browser, form, patron)
    assert arrived.status == 200 and arrived.url == servers.library.with_path("/")
    assert patron.username in await arrived.text()
    # The same login holds at the gateway: the catalogue knows the patron now.
    catalogue = await browser.get(servers.gateway / "catalogue" / "")
    assert identity_seen(await catalogue.json())["x-library-username"] == patron.username


async def test_logging_out_of_the_site_leaves_the_gateway_session(
    servers: Servers, browser: aiohttp.ClientSession, patron: Account
) -> None:
    await fill_in_login(browser, await browser.get(servers.library / "login"), patron)
    out = await browser.post(servers.library / "logout")
    assert out.url == servers.library.with_path("/")
    assert "Log in with your library account" in await out.text()
    catalogue = await browser.get(servers.gateway / "catalogue" / "")
    assert identity_seen(await catalogue.json())["x-library-username"] == patron.username


async def test_a_replayed_or_foreign_answer_logs_nobody_in(
    servers: Servers, browser: aiohttp.ClientSession, patron: Account
) -> None:
    arrived = await fill_in_login(browser, await browser.get(servers.library / "login"), patron)
    callback = next(r.url for r in arrived.history if r.url.path == "/callback")
    await browser.post(servers.library / "logout")
    # The same answer again: its login was used up by the first.
    replayed = await browser.get(callback)
    assert replayed.status == 400 and "You are not logged in" in await replayed.text()
    # A login the site did start, answered in the name of another provider (RFC 9207).
    started = await browser.get(servers.library / "login", allow_redirects=False)
    state = URL(started.headers["Location"]).query["state"]
    forged = await browser.get(
        (servers.library / "callback").with_query(
            code="x", state=state, iss="https://login.example.org"
        )
    )
    assert forged.status == 400 and "did not come from" in await forged.text()
    # Another browser with this patron's answer: it started no login here.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as stranger:
        stolen = await stranger.get(callback)
        assert stolen.status == 400 and "not started here" in await stolen.text()
    home = await browser.get(servers.library.with_path("/"))
    assert "Log in with your library account" in await home.text()


# --- Back-channel logout ----------------------------------------------------------------------

LOGGED_OUT = "Log in with your library account"
_CLAIM = re.compile(r"<tr><th>(\w+)</th><td>([^<]*)</td></tr>")


async def logged_in_at_the_site(
    browser: aiohttp.ClientSession, servers: Servers, patron: Account
) -> dict[str, str]:
    """Log the patron in at the site (through the gateway); the claims its home page shows."""
    arrived = await fill_in_login(browser, await browser.get(servers.library / "login"), patron)
    assert arrived.url == servers.library.with_path("/")
    return await shown_claims(browser, servers)


async def shown_claims(browser: aiohttp.ClientSession, servers: Servers) -> dict[str, str]:
    """The ID token's claims the site's home page shows this browser; none when logged out."""
    text = await (await browser.get(servers.library.with_path("/"))).text()
    claims = {name: html.unescape(value) for name, value in _CLAIM.findall(text)}
    assert bool(claims) != (LOGGED_OUT in text)
    return claims


async def test_logging_out_at_the_gateway_logs_the_patron_out_at_the_site(
    servers: Servers, browser: aiohttp.ClientSession, patron: Account
) -> None:
    claims = await logged_in_at_the_site(browser, servers, patron)
    assert claims["sub"] == patron.id and claims["sid"]
    # The same patron in another browser: another gateway session, left alone.
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as laptop:
        elsewhere = await logged_in_at_the_site(laptop, servers, patron)
        assert elsewhere["sid"] != claims["sid"]

        account = await browser.get(servers.gateway / "auth" / "account")
        out = await browser.post(
            servers.gateway / "auth" / "logout", data={"csrf_token": csrf_in(await account.text())}
        )
        assert out.status == 200 and out.url.path == LOGIN_FORM
        async with asyncio.timeout(30):
            assert await servers.backchannel.get() == 200
        assert await shown_claims(browser, servers) == {}
        assert (await shown_claims(laptop, servers))["sid"] == elsewhere["sid"]


async def signing_key(pool: asyncpg.Pool, cookie_keys: MultiFernet) -> tuple[str, Any]:
    """The provider's RS256 key as the running gateway signs with it: its kid and private key."""
    store = KeyStore(pool, cookie_keys)
    await store.load()
    key = store.oidc_key("RS256")
    assert key is not None
    return key.kid, key.private


def logout_claims(servers: Servers, claims: dict[str, str]) -> dict[str, Any]:
    """A logout token's claims for the session the site shows `claims` of, as the gateway
    would send them."""
    now = int(time.time())
    return {
        "iss": str(servers.gateway),
        "aud": PUBLIC_LIBRARY_ID,
        "iat": now,
        "exp": now + 120,
        "jti": "logout-" + str(now),
        "sid": claims["sid"],
        "sub": claims["sub"],
        "events": {public_library.LOGOUT_EVENT: {}},
    }


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any]) -> str:
    return f"{_b64(header)}.{_b64(claims)}."


async def post_logout_token(
    servers: Servers, token: str | None
) -> tuple[aiohttp.ClientResponse, dict[str, Any]]:
    """POST `token` as the gateway would, from a client of our own (no cookies); the
    response, and its JSON body when it has one."""
    async with aiohttp.ClientSession() as client:
        resp = await client.post(
            servers.library.with_path(public_library.BACKCHANNEL_LOGOUT_PATH),
            data={} if token is None else {"logout_token": token},
        )
        body = await resp.read()
        return resp, json.loads(body) if body else {}


async def test_a_logout_token_signed_by_the_provider_for_the_site_ends_that_session(
    servers: Servers,
    browser: aiohttp.ClientSession,
    patron: Account,
    pool: asyncpg.Pool,
    cookie_keys: MultiFernet,
) -> None:
    """The control for the refusals below: the same construction, untampered, is taken."""
    claims = await logged_in_at_the_site(browser, servers, patron)
    kid, key = await signing_key(pool, cookie_keys)
    header = {"kid": kid, "typ": "logout+jwt"}
    token = jwt.encode(logout_claims(servers, claims), key, algorithm="RS256", headers=header)
    resp, _ = await post_logout_token(servers, token)
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    assert await shown_claims(browser, servers) == {}
    # Told twice (a retry whose answer got lost): still 200.
    again, _ = await post_logout_token(servers, token)
    assert again.status == 200


# Each way a logout token can be wrong, and what the site's refusal names.
REFUSED = {
    "forged": "bad_signature",
    "unsigned": "'none' is not allowed",
    "wrong-audience": "'aud'",
    "wrong-issuer": "'iss'",
    "expired": "expired",
    "not-a-logout-token-typ": "(typ)",
    "no-event": "(events)",
    "with-nonce": "(nonce)",
    "neither-sid-nor-sub": "neither a session nor a patron",
    "garbage": "did not verify",
    "missing": "no logout_token",
}


@pytest.mark.parametrize(("case", "reason"), REFUSED.items())
async def test_a_logout_token_that_does_not_verify_is_refused_and_ends_nothing(
    case: str,
    reason: str,
    servers: Servers,
    browser: aiohttp.ClientSession,
    patron: Account,
    pool: asyncpg.Pool,
    cookie_keys: MultiFernet,
) -> None:
    claims = await logged_in_at_the_site(browser, servers, patron)
    kid, key = await signing_key(pool, cookie_keys)
    header: dict[str, Any] = {"kid": kid, "typ": "logout+jwt"}
    payload = logout_claims(servers, claims)
    token: str | None
    if case == "forged":  # another key, under the provider's kid
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif case == "wrong-audience":
        payload["aud"] = "another-library"
    elif case == "wrong-issuer":
        payload["iss"] = "https://login.example.org"
    elif case == "expired":
        payload.update(iat=payload["iat"] - 3600, exp=payload["iat"] - 1800)
    elif case == "not-a-logout-token-typ":  # an ID token's header
        header["typ"] = "JWT"
    elif case == "no-event":
        payload["events"] = {"http://schemas.openid.net/event/other": {}}
    elif case == "with-nonce":
        payload["nonce"] = "n-0S6_WzA2Mj"
    elif case == "neither-sid-nor-sub":
        del payload["sid"], payload["sub"]
    token = jwt.encode(payload, key, algorithm="RS256", headers=header)
    if case == "unsigned":
        token = unsigned({"alg": "none", **header}, payload)
    elif case == "garbage":
        token = "not.a.token"
    elif case == "missing":
        token = None
    resp, answer = await post_logout_token(servers, token)
    assert resp.status == 400
    assert resp.headers["Cache-Control"] == "no-store"
    assert answer["error"] == "invalid_request" and reason in answer["error_description"]
    assert (await shown_claims(browser, servers))["sid"] == claims["sid"]
