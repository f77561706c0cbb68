"""An answer made for one patron stays out of shared caches: `Cache-Control: private` when the
backend chose no policy, `Vary: Cookie` always, the backend's own word kept (and a backend
that lets shared caches keep a patron's page logged for the operator, now and then, never
naming the patron); anonymous answers pass untouched. Against real backends on loopback, on
the small one-write path and the streamed one; the header rule itself with plain asserts."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from pytest_aiohttp import AiohttpServer

from auth.credentials.passwords import PasswordHasher
from auth.store.accounts import Account
from gateway.ops.logs import JsonFormatter
from gateway.proxy import handler
from gateway.proxy.headers import downstream_response_headers, keep_from_shared_caches
from tests.helpers import COOKIE, Gateway, MakeGateway, add_patron, login, routes_for

# What the backends answer under /<route>/<policy>.
POLICIES: dict[str, dict[str, str]] = {
    "none": {},
    "no-store": {"Cache-Control": "no-store"},
    "vary": {"Vary": "Accept-Encoding"},
    "vary-cookie": {"Vary": "Accept-Encoding, cookie"},
    "vary-star": {"Vary": "*"},
    "public": {"Cache-Control": "public, max-age=60"},
}

# Both ways an answer goes back: `catalogue` (optional, the small answer in one write) and
# `streamed` (optional, an answer framed by the backend closing, which the proxy can only
# stream).
PATHS = [pytest.param("/catalogue", id="small"), pytest.param("/streamed", id="streamed")]


@pytest.fixture
async def policy_backend(aiohttp_server: AiohttpServer) -> TestServer:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(text="a page", headers=POLICIES[request.match_info["policy"]])

    app = web.Application()
    app.router.add_get("/{route}/{policy}", answer)
    return await aiohttp_server(app)


@pytest.fixture
async def until_close_backend() -> AsyncIterator[int]:
    """The same answers without a length, ended by closing the connection."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        policy = head.split(" ", 2)[1].rsplit("/", 1)[1]
        fields = "".join(f"{name}: {value}\r\n" for name, value in POLICIES[policy].items())
        writer.write(
            f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n{fields}Connection: close\r\n\r\n"
            "a streamed page".encode()
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


@pytest.fixture
async def gw(
    make_gateway: MakeGateway, policy_backend: TestServer, until_close_backend: int
) -> Gateway:
    streamed = f"""  - name: streamed
    prefix: /streamed
    backend: http://127.0.0.1:{until_close_backend}
    auth: optional
"""
    return await make_gateway(routes_for(policy_backend.port, streamed))


@pytest.fixture
async def patron(gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher) -> Account:
    """A patron logged in on `gw` (the client's jar holds the session)."""
    account = await add_patron(pool, hasher)
    assert (await login(gw, account.username)).status == 303
    return account


async def page(gw: Gateway, path: str) -> ClientResponse:
    resp = await gw.get(path)
    assert resp.status == 200
    assert (await resp.text()).endswith("page")
    return resp


@pytest.mark.parametrize("route", PATHS)
async def test_a_patrons_page_without_a_policy_is_private_and_varies_on_the_cookie(
    gw: Gateway, patron: Account, route: str
) -> None:
    """A shared cache (a library's or a campus's proxy, a CDN) must neither keep one patron's
    page nor hand it to the next person behind it."""
    resp = await page(gw, f"{route}/none")
    assert resp.headers.getall("Cache-Control") == ["private"]
    assert resp.headers.getall("Vary") == ["Cookie"]


@pytest.mark.parametrize("route", PATHS)
async def test_a_backends_own_policy_is_kept_and_cookie_is_added_to_vary(
    gw: Gateway, patron: Account, route: str
) -> None:
    resp = await page(gw, f"{route}/no-store")
    assert resp.headers.getall("Cache-Control") == ["no-store"]
    assert resp.headers.getall("Vary") == ["Cookie"]
    resp = await page(gw, f"{route}/vary")
    assert resp.headers.getall("Vary") == ["Accept-Encoding, Cookie"]
    assert resp.headers.getall("Cache-Control") == ["private"]


@pytest.mark.parametrize("route", PATHS)
@pytest.mark.parametrize(
    ("policy", "vary"), [("vary-cookie", "Accept-Encoding, cookie"), ("vary-star", "*")]
)
async def test_a_vary_that_names_cookie_or_everything_is_left_alone(
    gw: Gateway, patron: Account, route: str, policy: str, vary: str
) -> None:
    resp = await page(gw, f"{route}/{policy}")
    assert resp.headers.getall("Vary") == [vary]


@pytest.mark.parametrize("route", PATHS)
async def test_a_patrons_page_a_backend_calls_public_is_kept_so_and_logged_once_per_route(
    gw: Gateway, patron: Account, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The backend may know better (a page that only looks personal), so its word stands;
    but the operator hears of it, once for many answers, by route and never by patron."""
    caplog.set_level(logging.WARNING, logger="gateway.proxy")
    for _ in range(5):
        resp = await page(gw, f"{route}/public")
        assert resp.headers.getall("Cache-Control") == ["public, max-age=60"]
        assert resp.headers.getall("Vary") == ["Cookie"]
    await page(gw, "/open/public")  # another route: heard of on its own
    await page(gw, f"{route}/no-store")  # a private answer: nothing to say
    warned = [record for record in caplog.records if record.name == "gateway.proxy"]
    assert [(record.levelno, record.__dict__["route"]) for record in warned] == [
        (logging.WARNING, route.strip("/")),
        (logging.WARNING, "open"),
    ]
    # The log line as operators read it names the route and nothing about the patron.
    lines = [json.loads(JsonFormatter().format(record)) for record in warned]
    assert lines[0]["route"] == route.strip("/")
    assert route.strip("/") in lines[0]["message"]
    told = json.dumps(lines)
    for secret in (patron.id, patron.username, patron.pass_number, patron.email):
        assert secret is not None and secret not in told


async def test_the_warning_comes_again_once_its_interval_has_passed(
    gw: Gateway, patron: Account, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "Once in a while", not "once ever": a route that keeps doing it keeps being named."""
    monkeypatch.setattr(handler, "SHARED_CACHE_WARNING_EVERY", 0.0)
    caplog.set_level(logging.WARNING, logger="gateway.proxy")
    for _ in range(3):
        await page(gw, "/catalogue/public")
    assert len([r for r in caplog.records if r.name == "gateway.proxy"]) == 3


@pytest.mark.parametrize("route", PATHS)
async def test_an_anonymous_answer_passes_untouched(
    gw: Gateway, route: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Nobody's page: the backend's caching is its own business, and no Vary: Cookie splits
    the cache of a public page by every visitor's cookies."""
    caplog.set_level(logging.WARNING, logger="gateway.proxy")
    resp = await page(gw, f"{route}/none")
    assert "Cache-Control" not in resp.headers
    assert "Vary" not in resp.headers
    resp = await page(gw, f"{route}/vary")
    assert resp.headers.getall("Vary") == ["Accept-Encoding"]
    assert "Cache-Control" not in resp.headers
    resp = await page(gw, f"{route}/public")
    assert resp.headers.getall("Cache-Control") == ["public, max-age=60"]
    assert "Vary" not in resp.headers
    assert not [record for record in caplog.records if record.name == "gateway.proxy"]


# --- The rule, with plain asserts ------------------------------------------------------------


def personal(*fields: tuple[str, str]) -> tuple[list[tuple[str, str]], bool]:
    out, _, shared = downstream_response_headers(list(fields), cookie_name=COOKIE, personal=True)
    return out, shared


def test_several_vary_fields_get_one_more_rather_than_being_rewritten() -> None:
    """Several fields are one comma-separated list (RFC 9110 5.3)."""
    out, _ = personal(("Vary", "Accept-Encoding"), ("Vary", "Accept-Language"))
    assert [value for name, value in out if name == "Vary"] == [
        "Accept-Encoding",
        "Accept-Language",
        "Cookie",
    ]
    out, _ = personal(("Vary", "Accept-Encoding"), ("vary", "Cookie"))
    assert [value for name, value in out if name.lower() == "vary"] == ["Accept-Encoding", "Cookie"]


def test_a_policy_the_backend_named_in_connection_is_none_of_the_clients() -> None:
    """A Cache-Control or Vary the client never sees (hop-by-hop by Connection) cannot stand
    in for the patron's own."""
    out, shared = personal(
        ("Connection", "Cache-Control, Vary"),
        ("Cache-Control", "public"),
        ("Vary", "Cookie"),
        ("Content-Type", "text/html"),
    )
    assert out == [("Content-Type", "text/html"), ("Vary", "Cookie"), ("Cache-Control", "private")]
    assert not shared


def test_the_one_vary_is_extended_where_it_stands_when_connection_drops_fields_before_it() -> None:
    out, _ = personal(
        ("Connection", "close, X-Hop"),
        ("X-Hop", "1"),
        ("Content-Type", "text/html"),
        ("Vary", "Accept-Encoding"),
        ("Cache-Control", "no-cache"),
    )
    assert out == [
        ("Content-Type", "text/html"),
        ("Vary", "Accept-Encoding, Cookie"),
        ("Cache-Control", "no-cache"),
    ]


@pytest.mark.parametrize(
    ("cache_control", "shared"),
    [
        ("public, max-age=60", True),
        ("PUBLIC", True),
        ("max-age=60, s-maxage=600", True),
        ("s-maxage=600, private", False),
        ("public, no-store", False),
        ("private, max-age=60", False),
        ("no-cache", False),
        ("max-age=60", False),
    ],
)
def test_only_a_policy_that_lets_shared_caches_keep_the_answer_is_reported(
    cache_control: str, shared: bool
) -> None:
    out, reported = personal(("Cache-Control", cache_control))
    assert reported is shared
    assert ("Cache-Control", cache_control) in out


def test_an_anonymous_answer_keeps_its_headers_exactly() -> None:
    fields = [
        ("Content-Type", "text/html"),
        ("Cache-Control", "public, max-age=60"),
        ("Vary", "Accept-Encoding"),
        ("Vary", "Accept-Language"),
    ]
    assert downstream_response_headers(fields, cookie_name=COOKIE) == (fields, None, False)


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ([], "private"),
        (["public, max-age=600, s-maxage=600"], "max-age=600, private"),
        (["PUBLIC", "max-age=60"], "max-age=60, private"),
        (["no-store"], "no-store"),
        (["private, max-age=5"], "private, max-age=5"),
        (['private="X-Mine", max-age=5'], 'private="X-Mine", max-age=5, private'),
    ],
)
def test_an_answer_carrying_the_gateways_cookie_is_kept_from_shared_caches(
    sent: list[str], kept: str
) -> None:
    """The rule `handler` applies to an answer it puts the session cookie on
    (tests/security/test_session_cookie.py attacks it end to end)."""
    out = CIMultiDict([("Cache-Control", value) for value in sent])
    keep_from_shared_caches(out)
    assert out.getall("Cache-Control") == [kept]
