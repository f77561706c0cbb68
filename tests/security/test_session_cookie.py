"""The session cookie from the attacker's side: oversized or duplicated cookies, session ids
outside the cookie, backends that try to read or overwrite it, and methods that echo it.
(Flags, tampering, expiry and revocation are attacked in tests/test_sessions.py.)
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.fernet import MultiFernet

from auth.credentials.passwords import PasswordHasher
from tests.helpers import (
    COOKIE,
    Gateway,
    MakeGateway,
    add_patron,
    clears_cookie,
    fetch,
    jar_cookie,
    login,
    open_cookie,
    routes_for,
    seal_cookie,
)
from tests.security.wire import RecordingBackend, exchange, statuses

MAX_COOKIE_BYTES = 4096


@pytest.fixture
async def gw(make_gateway: MakeGateway, recorder: RecordingBackend) -> Gateway:
    return await make_gateway(routes_for(recorder.port))


async def holder(gw: Gateway, recorder: RecordingBackend, cookie: str) -> str | None:
    """The account a required route's backend is told about for exactly this cookie."""
    recorder.requests.clear()
    resp = await fetch(gw, "/reservations/mine", cookie)
    if resp.status == 401:
        return None
    assert resp.status == 200
    [seen] = recorder.requests
    [account] = seen.all("X-Library-User-Id")
    return account


async def session_of(gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher) -> tuple[str, str]:
    """A new patron logged in: (account id, the session cookie's value)."""
    patron = await add_patron(pool, hasher)
    gw.session.cookie_jar.clear()
    assert (await login(gw, patron.username)).status == 303
    cookie = jar_cookie(gw)
    assert cookie is not None
    return patron.id, cookie


async def test_a_genuine_session_padded_past_4_kib_is_anonymous(
    gw: Gateway,
    recorder: RecordingBackend,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    cookie_keys: MultiFernet,
) -> None:
    """The size limit is checked before anything else, so even a correctly encrypted cookie
    for a live session is refused once it is larger than any cookie the gateway writes:
    a cheap bound on the work a forged cookie can cause (ASVS 5.1.4, 11.1.4)."""
    account, cookie = await session_of(gw, pool, hasher)
    data = open_cookie(cookie_keys, cookie)
    data["session"]["padding"] = secrets.token_urlsafe(3000)
    padded = seal_cookie(cookie_keys, data)
    assert len(padded) > MAX_COOKIE_BYTES
    resp = await fetch(gw, "/reservations/mine", padded)
    assert resp.status == 401
    assert clears_cookie(resp)
    # Trimmed below the limit, the same session data is accepted: the size was the reason.
    data["session"]["padding"] = "x"
    assert await holder(gw, recorder, seal_cookie(cookie_keys, data)) == account


async def test_a_cookie_header_longer_than_the_parser_allows_is_refused_before_any_work(
    gw: Gateway, recorder: RecordingBackend
) -> None:
    """aiohttp's 8190-byte field limit answers 400 before routing, session decoding or the
    backend (ASVS 11.1.4)."""
    assert gw.port is not None
    attack = (
        b"GET /open/x HTTP/1.1\r\nHost: x\r\nCookie: "
        + COOKIE.encode()
        + b"="
        + b"A" * 9000
        + b"\r\nConnection: close\r\n\r\n"
    )
    assert statuses(await exchange(gw.port, attack)) == [400]
    assert recorder.requests == []


async def test_of_two_session_cookies_one_wins_and_neither_reaches_the_backend(
    gw: Gateway, recorder: RecordingBackend, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Cookie tossing: a second cookie of the same name (planted by a sibling subdomain on
    an http:// deployment) may take the session's place, but the two are never merged, and
    the backend gets neither (ASVS 3.4.4 is the https defence: the __Host- prefix)."""
    first, first_cookie = await session_of(gw, pool, hasher)
    second, second_cookie = await session_of(gw, pool, hasher)
    gw.session.cookie_jar.clear()
    recorder.requests.clear()
    resp = await gw.get(
        "/reservations/mine",
        headers={
            "Accept": "application/json",
            "Cookie": f"{COOKIE}={first_cookie}; theme=dark; {COOKIE}={second_cookie}",
        },
    )
    assert resp.status == 200
    [seen] = recorder.requests
    assert seen.all("X-Library-User-Id") in ([first], [second])
    assert seen.all("Cookie") == ["theme=dark"]


async def test_a_session_id_outside_the_cookie_is_ignored(
    gw: Gateway, recorder: RecordingBackend, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Session tokens are never accepted from the URL, where they end up in logs, history
    and Referer headers (ASVS 3.1.1), nor from a header a script could set."""
    _, cookie = await session_of(gw, pool, hasher)
    gw.session.cookie_jar.clear()
    for path, headers in (
        (f"/reservations/mine?{COOKIE}={cookie}", {}),
        ("/reservations/mine", {"Authorization": f"Bearer {cookie}"}),
        ("/reservations/mine", {"X-Session": cookie}),
    ):
        resp = await gw.get(
            path, headers={"Accept": "application/json", **headers}, allow_redirects=False
        )
        assert resp.status == 401
    assert recorder.requests == []


async def test_the_login_redirect_never_carries_the_session(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Pomerium CVE-2021-29651 (GHSA-35vc-w93w-75c2): a login redirect that carries a
    credential hands it to wherever the redirect points. Ours carries none (ASVS 3.1.1)."""
    patron = await add_patron(pool, hasher)
    resp = await login(gw, patron.username, next="/catalogue/search?q=x")
    assert resp.status == 303
    cookie = jar_cookie(gw)
    assert cookie is not None
    assert resp.headers["Location"] == "/catalogue/search?q=x"
    assert cookie not in resp.headers["Location"]


@pytest.mark.parametrize(
    "set_cookie",
    [
        pytest.param("library_session=planted; Path=/", id="plain-ASVS-3.4.5"),
        pytest.param("library_session=; Max-Age=0; Path=/", id="forced-logout-ASVS-3.3.1"),
        pytest.param("  Library_Session=planted", id="case-and-space-ASVS-3.4.5"),
        pytest.param(
            "library_session=planted; Domain=127.0.0.1; Path=/auth", id="narrower-path-ASVS-3.4.5"
        ),
        # A pair without a name is stored as a nameless cookie and sent back as its value
        # alone, `library_session=planted` (RFC 6265bis 5.6; the "nameless cookie" bypass).
        pytest.param("=library_session=planted; Path=/", id="nameless-ASVS-3.4.5"),
        pytest.param("= library_session=planted; Path=/", id="nameless-spaced-ASVS-3.4.5"),
        # The login's device cookie is the gateway's too: clearing it makes the patron's own
        # browser a stranger that an attacker's lockout stops (OWASP device cookies).
        pytest.param("library_device=; Max-Age=0; Path=/auth/", id="device-cleared-ASVS-3.4.5"),
        pytest.param("=library_device=planted; Path=/auth/", id="device-nameless-ASVS-3.4.5"),
    ],
)
async def test_a_backend_can_neither_plant_nor_clear_the_gateway_cookie(
    make_gateway: MakeGateway,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    set_cookie: str,
) -> None:
    """A compromised backend that could set the session cookie could fix a patron's session
    to one it controls or log everybody out (session fixation through a relying party)."""

    async def handler(request: web.Request) -> web.Response:
        resp = web.Response(text="ok")
        resp.headers.add("Set-Cookie", set_cookie)
        resp.headers.add("Set-Cookie", "backend_pref=1; Path=/")
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = await aiohttp_server(app)
    gw = await make_gateway(routes_for(server.port))
    patron = await add_patron(pool, hasher)
    assert (await login(gw, patron.username)).status == 303
    resp = await gw.get("/catalogue/x")
    assert resp.status == 200
    cookies = resp.headers.getall("Set-Cookie", [])
    assert cookies == ["backend_pref=1; Path=/"]
    still = await gw.get("/reservations/mine", headers={"Accept": "application/json"})
    assert still.status == 200


@pytest.mark.parametrize(
    "set_cookie",
    [
        pytest.param("__Host-library_session=planted; Secure; Path=/", id="host-prefixed"),
        pytest.param("__HOST-Library_Session=planted; Secure; Path=/", id="host-prefix-case"),
        pytest.param("=__Host-library_session=planted; Secure; Path=/", id="nameless-host"),
        pytest.param("__Secure-library_device=; Max-Age=0; Secure; Path=/auth/", id="device"),
        pytest.param("=__Secure-library_device=x; Secure; Path=/auth/", id="nameless-device"),
    ],
)
async def test_behind_https_a_backend_can_neither_plant_nor_clear_the_prefixed_cookies(
    make_gateway: MakeGateway,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    set_cookie: str,
) -> None:
    """With an https public URL the gateway's cookies carry the `__Host-` and `__Secure-`
    prefixes, which stop a sibling subdomain but not a backend answering on the gateway's
    own host: those names, in any case and as a nameless cookie's value, are the gateway's
    alone (ASVS 3.4.5)."""

    async def handler(request: web.Request) -> web.Response:
        resp = web.Response(text="ok")
        resp.headers.add("Set-Cookie", set_cookie)
        resp.headers.add("Set-Cookie", "backend_pref=1; Path=/")
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = await aiohttp_server(app)
    gw = await make_gateway(
        routes_for(server.port), env={"GATEWAY_PUBLIC_URL": "https://login.example.org"}
    )
    resp = await gw.get("/catalogue/x")
    assert resp.status == 200
    assert resp.headers.getall("Set-Cookie", []) == ["backend_pref=1; Path=/"]


async def test_a_backend_that_echoes_requests_never_sees_the_session(
    make_gateway: MakeGateway,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
) -> None:
    """Cross-site tracing defeats HttpOnly when TRACE (or any echo) reflects the Cookie
    header (ASVS 3.4.2, 14.5.1); over a WebSocket the same cookie would ride along on the
    upgrade. Backends get the patron's identity from the gateway, never its credential
    (ASVS 1.2.2: least privilege between components)."""

    async def echo(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.send_str(request.headers.get("Cookie", ""))
            await ws.close()
            return ws
        return web.Response(text=json.dumps(request.headers.get("Cookie", "")))

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    server = await aiohttp_server(app)
    gw = await make_gateway(routes_for(server.port))
    patron = await add_patron(pool, hasher)
    assert (await login(gw, patron.username)).status == 303
    cookie = jar_cookie(gw)
    assert cookie is not None
    gw.session.cookie_jar.update_cookies({"theme": "dark"})
    traced = await gw.request("TRACE", "/catalogue/x")
    assert traced.status == 200
    assert json.loads(await traced.text()) == "theme=dark"
    async with gw.ws_connect("/reservations/live") as ws:
        message = await ws.receive()
        assert message.type == aiohttp.WSMsgType.TEXT
        assert cookie not in message.data
        assert COOKIE not in message.data


@pytest.fixture
async def public_pages() -> AsyncIterator[int]:
    """A backend that calls every page of its shared-cacheable for ten minutes: with a length
    (`/…/small`, the proxy's one-write path) or ended by closing (`/…/streamed`)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        framing = (
            "Content-Length: 6\r\n"
            if head.split(" ", 2)[1].endswith("/small")
            else "Connection: close\r\n"
        )
        writer.write(
            f"HTTP/1.1 200 OK\r\nCache-Control: public, max-age=600, s-maxage=600\r\n"
            f"{framing}\r\na page".encode()
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


def shared_caches_may_store(resp: aiohttp.ClientResponse) -> bool:
    directives = {
        part.split("=", 1)[0].strip().lower()
        for value in resp.headers.getall("Cache-Control", ())
        for part in value.split(",")
    }
    return "private" not in directives and "no-store" not in directives


@pytest.mark.parametrize("path", ["/catalogue/small", "/catalogue/streamed"])
async def test_an_answer_carrying_the_gateways_cookie_is_never_left_to_shared_caches(
    make_gateway: MakeGateway,
    public_pages: int,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    cookie_keys: MultiFernet,
    path: str,
) -> None:
    """Web cache deception's cousin (CWE-524, ASVS 8.1.1 and 3.4): the gateway puts a
    refreshed session cookie, once a minute, on whatever answer the patron's request gets.
    When that answer is one the backend lets shared caches keep, a CDN or a campus proxy
    stores it with the cookie and hands the patron's session to everyone who asks for the
    page next; a cookie cleared that way logs out everyone who gets the stored copy. The
    backend's policy may stand for its page, never for the gateway's cookie."""
    gw = await make_gateway(routes_for(public_pages))
    patron = await add_patron(pool, hasher)
    assert (await login(gw, patron.username)).status == 303
    cookie = jar_cookie(gw)
    assert cookie is not None
    data = open_cookie(cookie_keys, cookie)
    data["session"]["seen"] -= 120  # the activity is due to be recorded in a new cookie
    data["session"]["iat"] -= 120
    quiet = seal_cookie(cookie_keys, data)
    for sent, refreshed in ((quiet, True), ("not-a-cookie-of-ours", False)):
        resp = await fetch(gw, path, sent)
        assert resp.status == 200
        assert await resp.text() == "a page"
        [set_cookie] = resp.headers.getall("Set-Cookie")
        assert set_cookie.startswith(f"{COOKIE}=")
        assert clears_cookie(resp) is not refreshed
        assert not shared_caches_may_store(resp)
