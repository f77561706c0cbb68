"""Cross-site request forgery on every state-changing form, clickjacking of the /auth/ pages,
the security headers every page of the gateway's own and every answer carries.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from aiohttp import ClientResponse, WSServerHandshakeError, web
from aiohttp.test_utils import TestServer
from yarl import URL

from auth.credentials.passwords import PasswordHasher
from auth.pages.render import PERMISSIONS_POLICY
from gateway.ops.admin import create_admin_app
from gateway.proxy.websocket import is_upgrade as websocket_upgrade
from gateway.server.runner import AdminRunner
from tests.helpers import (
    PASSWORD,
    Gateway,
    MakeGateway,
    add_patron,
    attempt,
    form_token,
    login,
    page_text,
    post_form,
    routes_for,
)
from tests.security.wire import RecordingBackend, exchange, head_of


@pytest.fixture
async def gw(make_gateway: MakeGateway, recorder: RecordingBackend) -> Gateway:
    return await make_gateway(routes_for(recorder.port))


# --- CSRF ---------------------------------------------------------------------------------------

# Every POST under /auth/, with the fields a forged cross-site form would carry.
FORMS = [
    pytest.param(
        "/auth/login", {"username": "victim", "password": PASSWORD}, id="login-CSRF-ASVS-4.2.2"
    ),
    pytest.param("/auth/logout", {}, id="logout-ASVS-4.2.2"),
    pytest.param(
        "/auth/account/username",
        {"new_username": "attacker", "password": PASSWORD},
        id="rename-ASVS-4.2.2",
    ),
    pytest.param(
        "/auth/account/password",
        {"current_password": PASSWORD, "new_password": "attacker chosen secret"},
        id="password-change-ASVS-4.2.2",
    ),
    pytest.param(
        "/auth/forgot-password", {"identifier": "victim"}, id="forgot-password-ASVS-4.2.2"
    ),
    pytest.param(
        "/auth/forgot-username", {"email": "victim@example.org"}, id="forgot-username-ASVS-4.2.2"
    ),
    pytest.param(
        "/auth/reset-password",
        {"token": "x", "new_password": "attacker chosen secret"},
        id="reset-ASVS-4.2.2",
    ),
    pytest.param(
        "/auth/activate",
        {"token": "x", "username": "", "password": "attacker secret"},
        id="activate-ASVS-4.2.2",
    ),
]


@pytest.mark.parametrize(("path", "fields"), FORMS)
@pytest.mark.parametrize(
    "token", ["missing", "no-body", "another-sessions", "in-query", "in-header"]
)
async def test_a_post_without_this_sessions_token_in_its_body_is_refused(
    gw: Gateway,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    path: str,
    fields: dict[str, str],
    token: str,
) -> None:
    """A forged cross-site POST rides on the victim's cookie but cannot know the token bound
    to the victim's session; a token anywhere but in the form body does not count either
    (ASVS 4.2.2, 13.2.3)."""
    patron = await add_patron(pool, hasher)
    foreign = await form_token(gw)  # the attacker's own, from the attacker's own session
    gw.session.cookie_jar.clear()
    assert (await login(gw, patron.username)).status == 303
    real = await form_token(gw, "/auth/account")  # right token, to be sent in the wrong place
    body = dict(fields)
    kwargs: dict[str, object] = {}
    if token == "another-sessions":
        body["csrf_token"] = foreign
    elif token == "in-query":
        kwargs["params"] = {"csrf_token": real}
    elif token == "in-header":
        kwargs["headers"] = {"X-CSRF-Token": real, "X-CSRFToken": real}
    if token == "no-body":
        # No form at all, no Content-Type: what a bare cross-site POST sends (a logout
        # needs nothing more); refused as a missing token, not as a malformed form.
        resp = await gw.post(path, allow_redirects=False)
    else:
        resp = await post_form(gw, path, body, **kwargs)
    assert resp.status == 403
    assert page_text("csrf.title") in await resp.text()  # one refusal, the same for every form
    # Nothing happened: the session is the patron's still, under the same name.
    still = await gw.get("/auth/account")
    assert still.status == 200
    assert patron.username in await still.text()


# --- Framing and page headers ---------------------------------------------------------------


async def blocked_login(gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher) -> ClientResponse:
    patron = await add_patron(pool, hasher)
    for n in range(5):
        await attempt(gw, patron.username, f"guess {n}")
    gw.session.cookie_jar.clear()
    token = await form_token(gw)
    resp = await post_form(
        gw, "/auth/login", {"csrf_token": token, "username": patron.username, "password": PASSWORD}
    )
    assert resp.status == 429
    return resp


AUTH_PAGES = [
    pytest.param("/auth/login", 200, id="login"),
    pytest.param("/auth/logout", 200, id="logout"),
    pytest.param("/auth/forgot-password", 200, id="forgot-password"),
    pytest.param("/auth/forgot-username", 200, id="forgot-username"),
    pytest.param("/auth/reset-password?token=dead", 410, id="dead-reset-link"),
    pytest.param("/auth/activate?token=dead", 410, id="dead-activation-link"),
    pytest.param("/auth/account", 302, id="account-redirect"),
    pytest.param("/auth/static/style.css", 200, id="static"),
    pytest.param("/auth/no-such-page", 404, id="not-found"),
]


@pytest.mark.parametrize(("path", "status"), AUTH_PAGES)
async def test_no_auth_page_can_be_framed_cached_or_run_script(
    gw: Gateway, path: str, status: int
) -> None:
    """Clickjacking the login or account page (ASVS 14.4.7), script injection (ASVS 14.4.3)
    and credentials kept in a shared computer's cache (ASVS 8.2.1), on every kind of
    /auth/ answer, errors included."""
    resp = await gw.get(path, allow_redirects=False)
    assert resp.status == status
    assert_page_headers(resp)


async def test_the_throttled_login_page_carries_the_same_headers(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """The 429 answer is a page too, and as frameable as any (ASVS 14.4.7)."""
    assert_page_headers(await blocked_login(gw, pool, hasher))


async def test_the_account_page_of_a_logged_in_patron_carries_the_same_headers(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """The page with the patron's details, the one most worth framing or keeping."""
    patron = await add_patron(pool, hasher)
    assert (await login(gw, patron.username)).status == 303
    resp = await gw.get("/auth/account", allow_redirects=False)
    assert resp.status == 200
    assert patron.username in await resp.text()
    assert_page_headers(resp)


@pytest.mark.parametrize(
    ("path", "status"),
    [
        pytest.param("/no-route", 404, id="not-found"),
        pytest.param("/dead/x", 502, id="backend-down"),
        pytest.param(URL("/open/%2e%2e/x", encoded=True), 400, id="bad-path"),
    ],
)
async def test_the_gateways_own_error_pages_share_no_window_and_no_powerful_feature(
    make_gateway: MakeGateway, recorder: RecordingBackend, path: str | URL, status: int
) -> None:
    """The small HTML pages the gateway writes itself, on the proxy path and off it, carry
    the same document policy as the /auth/ pages."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    extra = f"""  - name: dead
    prefix: /dead
    backend: http://127.0.0.1:{dead}
    auth: public
"""
    gw = await make_gateway(routes_for(recorder.port, extra))
    resp = await gw.get(path, headers={"Accept": "text/html"})
    assert resp.status == status
    assert resp.headers["Content-Type"].startswith("text/html")
    assert_document_policy(resp)


# The powerful features no page of the gateway's own may use (Permissions Policy names).
POWERFUL_FEATURES = (
    "camera",
    "microphone",
    "geolocation",
    "payment",
    "usb",
    "display-capture",
    "clipboard-read",
    "screen-wake-lock",
    "xr-spatial-tracking",
)
# Names Chromium knows on every platform it ships on (third_party/blink/renderer/core/
# permissions_policy/permissions_policy_features.json5: no `depends_on`, or one on an API
# shipped everywhere). Any other name (`ambient-light-sensor` and `bluetooth` behind flags,
# `web-share`, `hid` and `serial` missing on some platforms, `browsing-topics` being retired)
# costs every page a console warning "Unrecognized feature" where it is unknown. Firefox
# reads the header not at all, so it warns about nothing.
RECOGNISED_FEATURES = frozenset(
    {
        "accelerometer",
        "autoplay",
        "camera",
        "clipboard-read",
        "clipboard-write",
        "display-capture",
        "encrypted-media",
        "fullscreen",
        "gamepad",
        "geolocation",
        "gyroscope",
        "idle-detection",
        "magnetometer",
        "microphone",
        "midi",
        "payment",
        "publickey-credentials-get",
        "screen-wake-lock",
        "usb",
        "xr-spatial-tracking",
    }
)


def test_the_permissions_policy_names_only_features_browsers_recognise() -> None:
    named = [part.split("=", 1)[0].strip() for part in PERMISSIONS_POLICY.split(",")]
    assert sorted(set(named) - RECOGNISED_FEATURES) == []
    assert len(named) == len(set(named))
    assert set(POWERFUL_FEATURES) <= set(named)


def assert_document_policy(resp: ClientResponse) -> None:
    """Every powerful feature off (a page that was ever injected can still not reach camera,
    microphone or location), and no window shared with another site's page (cross-window
    attacks and reverse tabnabbing need a handle that COOP takes away); OWASP Secure Headers
    Project."""
    assert resp.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    allowed = dict(
        part.strip().split("=", 1) for part in resp.headers["Permissions-Policy"].split(",")
    )
    for feature in POWERFUL_FEATURES:
        assert allowed.get(feature) == "()", feature
    assert set(allowed.values()) == {"()"}, "every feature named is switched off"


def assert_page_headers(resp: ClientResponse) -> None:
    assert resp.headers["X-Frame-Options"] == "DENY"
    csp = [part.strip() for part in resp.headers["Content-Security-Policy"].split(";")]
    assert "frame-ancestors 'none'" in csp
    assert "default-src 'none'" in csp
    assert not [part for part in csp if part.startswith("script-src")]
    assert "unsafe-inline" not in resp.headers["Content-Security-Policy"]
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Referrer-Policy"] == "no-referrer"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    if resp.headers.get("Content-Type", "").startswith("text/html"):
        assert "charset=utf-8" in resp.headers["Content-Type"].lower()
    assert_document_policy(resp)


# --- Headers on every answer ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("public_url", "hsts"),
    [
        pytest.param("https://login.library.example", True, id="https-ASVS-14.4.5"),
        pytest.param("http://127.0.0.1:8080", False, id="http-no-HSTS-ASVS-14.4.5"),
    ],
)
async def test_hsts_is_sent_exactly_when_the_public_url_is_https(
    make_gateway: MakeGateway,
    recorder: RecordingBackend,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    public_url: str,
    hsts: bool,
) -> None:
    """HSTS over plain HTTP is ignored by browsers and, behind a TLS-terminating proxy that
    is misconfigured, pins a host that cannot do TLS; with an https public URL every answer,
    proxied or the gateway's own, carries it (ASVS 14.4.5). It pins the whole host, so it is
    the gateway's alone: a backend can neither unpin it (`max-age=0`) nor pin a host served
    over http."""
    gw = await make_gateway(routes_for(recorder.port), env={"GATEWAY_PUBLIC_URL": public_url})
    for path in ("/open/x", "/auth/login", "/no-route", "/healthz"):
        resp = await gw.get(path)
        assert ("Strict-Transport-Security" in resp.headers) is hsts, path
        if hsts:
            assert "includeSubDomains" in resp.headers["Strict-Transport-Security"]

    # Every other kind of answer, the backend's own HSTS, and the answers aiohttp's parser
    # and the WebSocket handshake write.
    async def own_hsts(request: web.Request) -> web.StreamResponse:
        if websocket_upgrade(request):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.close()
            return ws
        return web.Response(text="ok", headers={"Strict-Transport-Security": "max-age=0; preload"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", own_hsts)
    server = await aiohttp_server(app)
    streaming = await until_close_backend()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    extra = f"""  - name: own
    prefix: /own
    backend: http://127.0.0.1:{server.port}
    auth: public
  - name: streamed
    prefix: /streamed
    backend: http://127.0.0.1:{streaming.sockets[0].getsockname()[1]}
    auth: public
  - name: dead
    prefix: /dead
    backend: http://127.0.0.1:{dead}
    auth: public
"""
    gw = await make_gateway(
        routes_for(recorder.port, extra), env={"GATEWAY_PUBLIC_URL": public_url}
    )
    answers = {
        "backend-sets-its-own": await gw.get("/own/x"),
        "streamed": await gw.get("/streamed/x"),
        "backend-down": await gw.get("/dead/x"),
        "login-required": await gw.get("/reservations/mine"),
        "login-redirect": await gw.get(
            "/reservations/mine", headers={"Accept": "text/html"}, allow_redirects=False
        ),
        "bad-path": await gw.get(URL("/open/%2e%2e/x", encoded=True)),
        "landing-redirect": await gw.get("/", allow_redirects=False),
        "jwks": await gw.get("/.well-known/jwks.json"),
        "auth-method": await gw.delete("/auth/login"),
        "auth-static": await gw.get("/auth/static/style.css"),
        "auth-not-found": await gw.get("/auth/no-such-page"),
    }
    for kind, resp in answers.items():
        fields = resp.headers.getall("Strict-Transport-Security", [])
        assert fields == ([HSTS] if hsts else []), kind
    assert gw.port is not None
    heads = {
        "parser-refused": head_of(
            await exchange(gw.port, b"GET /open/x HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n")
        ),
        "websocket-handshake": head_of(
            await exchange(
                gw.port,
                b"GET /own/live HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
            )
        ),
    }
    assert heads["parser-refused"].split(" ", 2)[1] == "400"
    assert heads["websocket-handshake"].split(" ", 2)[1] == "101"
    for kind, head in heads.items():
        fields = [
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")[1:]
            if line.lower().startswith("strict-transport-security:")
        ]
        assert fields == ([HSTS] if hsts else []), kind
    streaming.close()
    await streaming.wait_closed()


# A year and every subdomain; `preload` is an operator's deliberate promise, never a default.
HSTS = "max-age=31536000; includeSubDomains"


async def test_every_kind_of_answer_is_nosniff_and_names_no_version(
    make_gateway: MakeGateway, recorder: RecordingBackend
) -> None:
    """MIME sniffing of an error page into HTML (ASVS 14.4.4) and version banners that tell
    an attacker which CVEs to try (ASVS 14.3.3), on proxied answers, errors and the
    gateway's own endpoints alike."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    extra = f"""  - name: dead
    prefix: /dead
    backend: http://127.0.0.1:{dead}
    auth: public
"""
    streaming = await until_close_backend()
    extra += f"""  - name: streamed
    prefix: /streamed
    backend: http://127.0.0.1:{streaming.sockets[0].getsockname()[1]}
    auth: public
"""
    gw = await make_gateway(routes_for(recorder.port, extra))
    answers = {
        "proxied": await gw.get("/open/x"),
        "streamed": await gw.get("/streamed/x"),
        "no-route": await gw.get("/no-route"),
        "bad-path": await gw.get(URL("/open/%2e%2e/x", encoded=True)),
        "login-required": await gw.get("/reservations/mine"),
        "backend-down": await gw.get("/dead/x"),
        "landing-redirect": await gw.get("/", allow_redirects=False),
        "health": await gw.get("/healthz"),
        "jwks": await gw.get("/.well-known/jwks.json"),
        "auth-page": await gw.get("/auth/login"),
        "auth-method": await gw.delete("/auth/login"),
        "auth-static": await gw.get("/auth/static/style.css"),
    }
    statuses = [resp.status for resp in answers.values()]
    # A gateway page asked with a method it does not take: 405 with Allow (RFC 9110 15.5.6).
    assert statuses == [200, 200, 404, 400, 401, 502, 302, 200, 200, 200, 405, 200]
    assert set(answers["auth-method"].headers["Allow"].split(",")) == {"GET", "HEAD", "POST"}
    assert await answers["streamed"].text() == "streamed until close"
    for kind, resp in answers.items():
        assert resp.headers["X-Content-Type-Options"] == "nosniff", kind
        assert resp.headers["Server"] == "library-gateway", kind
        assert resp.headers["X-Request-Id"], kind
        assert "aiohttp" not in str(resp.headers) and "Python" not in str(resp.headers), kind
    for kind in ("auth-page", "auth-method", "auth-static"):
        assert "frame-ancestors 'none'" in answers[kind].headers["Content-Security-Policy"], kind
    streaming.close()
    await streaming.wait_closed()


async def until_close_backend() -> asyncio.Server:
    """A backend whose answer has no length: the gateway must stream it (it cannot know the
    body is whole until the backend closes)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            b"Connection: close\r\n\r\nstreamed until close"
        )
        await writer.drain()
        writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0)


async def test_a_websocket_handshake_carries_the_gateways_headers(
    make_gateway: MakeGateway, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    async def accept(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", accept)
    server = await aiohttp_server(app)
    gw = await make_gateway(routes_for(server.port))
    assert gw.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
    writer.write(
        b"GET /open/live HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"X-Request-Id: ws-handshake-1\r\n\r\n"
    )
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    writer.close()
    await writer.wait_closed()
    assert head.startswith("HTTP/1.1 101 ")
    lines = {
        line.split(":", 1)[0].lower(): line.split(":", 1)[1].strip()
        for line in head.split("\r\n")[1:]
        if ":" in line
    }
    assert lines["x-request-id"] == "ws-handshake-1"
    assert lines["server"] == "library-gateway"
    assert lines["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(
    "origin",
    [
        pytest.param("http://evil.example", id="another-site-CSWSH"),
        pytest.param("null", id="sandboxed-frame-or-file-CSWSH"),
        pytest.param("http://127.0.0.1:8081", id="another-port-CSWSH"),
        pytest.param("https://127.0.0.1:8080", id="another-scheme-CSWSH"),
        pytest.param("http://127.0.0.1:8080.evil.example", id="suffixed-host-CSWSH"),
    ],
)
async def test_a_websocket_opened_by_another_site_gets_no_patrons_identity(
    make_gateway: MakeGateway,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    origin: str,
) -> None:
    """Cross-site WebSocket hijacking (CWE-1385; ASVS 13.5.2 on WebSocket origins): the
    browser sends the patron's cookie with a handshake that any page may start, and the
    same-origin policy does not protect what the socket then carries. A handshake that
    comes with a session must come from the gateway's own origin (the public URL); from any
    other it is refused before a backend is asked. Non-browser clients send no Origin and
    the gateway's own pages send its own, so both connect as before."""
    opened: list[str] = []

    async def accept(request: web.Request) -> web.WebSocketResponse:
        opened.append(request.headers.get("X-Library-User-Id", ""))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/{tail:.*}", accept)
    server = await aiohttp_server(app)
    gw = await make_gateway(routes_for(server.port))
    patron = await add_patron(pool, hasher)
    assert (await login(gw, patron.username)).status == 303
    for path in ("/reservations/live", "/catalogue/live"):
        with pytest.raises(WSServerHandshakeError) as refused:
            await gw.ws_connect(path, headers={"Origin": origin})
        assert refused.value.status == 403
    assert opened == []
    for own in ({"Origin": "http://127.0.0.1:8080"}, {}):
        async with gw.ws_connect("/reservations/live", headers=own) as ws:
            await ws.receive()
    assert opened == [patron.id, patron.id]


async def test_a_broken_websocket_handshake_is_refused_with_the_gateways_headers(
    make_gateway: MakeGateway, recorder: RecordingBackend
) -> None:
    """Upgrade and Connection say WebSocket, the rest of the handshake is missing: a 400
    from the gateway, never aiohttp's own answer naming its and Python's versions, and the
    backend is not even asked (found by review)."""
    gw = await make_gateway(routes_for(recorder.port))
    assert gw.port is not None
    answer = await exchange(
        gw.port,
        b"GET /open/live HTTP/1.1\r\nHost: localhost\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade, close\r\n"
        b"X-Request-Id: ws-broken-1\r\n\r\n",
    )
    status_line, *lines = head_of(answer).split("\r\n")
    assert status_line.startswith("HTTP/1.1 400 ")
    assert "Server: library-gateway" in lines
    assert "X-Request-Id: ws-broken-1" in lines
    assert "X-Content-Type-Options: nosniff" in lines
    assert "aiohttp" not in head_of(answer) and "Python" not in head_of(answer)
    assert recorder.requests == []


async def test_a_backends_own_server_banner_is_replaced(
    make_gateway: MakeGateway, aiohttp_server: Callable[..., Awaitable[TestServer]]
) -> None:
    """Backends behind the gateway do not announce their software either (ASVS 14.3.3)."""

    async def handler(request: web.Request) -> web.Response:
        return web.Response(text="ok", headers={"Server": "Apache/2.4.1 (Unix) PHP/5.3.3"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handler)
    server = await aiohttp_server(app)
    gw = await make_gateway(routes_for(server.port))
    resp = await gw.get("/open/x")
    assert resp.status == 200
    assert resp.headers.getall("Server") == ["library-gateway"]


async def test_a_request_the_parser_refuses_gets_an_answer_without_version_or_echo(
    gw: Gateway,
) -> None:
    """ASVS 14.3.3 and 7.4.1 for the one kind of answer aiohttp writes before the gateway
    runs (gateway.server.GatewayRunner tames it)."""
    assert gw.port is not None
    answer = await exchange(
        gw.port, b"GET /open/x HTTP/1.1\r\nHost: x\r\nX-Secret: session=abc\x00def\r\n\r\n"
    )
    head = head_of(answer)
    assert head.startswith("HTTP/1.1 400") or head.startswith("HTTP/1.0 400")
    assert "aiohttp" not in head and "Python" not in head
    assert b"session=abc" not in answer


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        pytest.param(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "200", id="metrics"
        ),
        pytest.param(
            b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "200", id="readyz"
        ),
        pytest.param(
            b"GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "404", id="404"
        ),
        pytest.param(
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Secret: session=abc\x01def\r\n\r\n",
            "400",
            id="parser-400",
        ),
    ],
)
async def test_the_admin_listener_names_no_version_and_echoes_nothing(
    gw: Gateway, request_bytes: bytes, status: str
) -> None:
    """The admin listener (metrics and probes; `GATEWAY_ADMIN_HOST=0.0.0.0` in a pod makes it
    reachable from the whole cluster) is served as `run` serves it, and answers like the
    public port: a versionless banner, nosniff, and no echo of a request its parser refused
    (ASVS 14.3.3)."""
    runner = AdminRunner(create_admin_app(gw.app), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        answer = await exchange(port, request_bytes)
    finally:
        await runner.cleanup()
    status_line, *fields = head_of(answer).split("\r\n")
    assert status_line.split(" ", 2)[1] == status
    assert "aiohttp" not in head_of(answer) and "Python" not in head_of(answer)
    assert "Server: library-gateway" in fields
    assert "X-Content-Type-Options: nosniff" in fields
    assert b"session=abc" not in answer and b"X-Secret" not in answer
