"""Open redirects, through the whole gateway: the `next` of the login, the redirect to the
login, and the fixed redirects after logout, reset and account changes.

Every authenticating proxy has shipped one of these (oauth2-proxy four times, Pomerium
once); the shapes below are the ones from those advisories. The full corpus runs against the
pure check in tests/test_redirects.py and through the login in tests/test_login.py.
"""

from __future__ import annotations

from urllib.parse import quote

import asyncpg
import markupsafe
import pytest

from auth.credentials.passwords import PasswordHasher
from tests.helpers import Gateway, MakeGateway, add_patron, form_token, login, post_form, routes_for
from tests.security.wire import RecordingBackend, exchange, head_of

PUBLIC_URL = "http://login.library.example"


@pytest.fixture
async def gw(make_gateway: MakeGateway, recorder: RecordingBackend) -> Gateway:
    return await make_gateway(routes_for(recorder.port))


ADVISORY_SHAPES = [
    pytest.param("//evil.example/", id="scheme-relative-oauth2-proxy-CVE-2020-5233"),
    pytest.param("/\\evil.example", id="slash-backslash-oauth2-proxy-CVE-2020-5233"),
    pytest.param("/%09/evil.example", id="encoded-tab-oauth2-proxy-CVE-2020-11053"),
    pytest.param("/%0a/evil.example", id="encoded-LF-oauth2-proxy-CVE-2020-11053"),
    pytest.param("/%0b/evil.example", id="encoded-VT-oauth2-proxy-CVE-2020-11053"),
    pytest.param("/%0d/evil.example", id="encoded-CR-oauth2-proxy-CVE-2020-11053"),
    pytest.param("/\t/evil.example", id="raw-tab-oauth2-proxy-CVE-2020-4037"),
    pytest.param("/%5c%5cevil.example", id="encoded-backslashes-oauth2-proxy-CVE-2020-4037"),
    pytest.param(
        "http://login.library.example.evil.example/",
        id="lookalike-suffix-oauth2-proxy-CVE-2021-21291",
    ),
    pytest.param(
        "http://evil.example\\.login.library.example/",
        id="backslash-host-oauth2-proxy-CVE-2021-21291",
    ),
    pytest.param(f"{PUBLIC_URL}/catalogue/", id="absolute-own-host-Pomerium-CVE-2021-29651"),
    pytest.param("javascript:alert(document.domain)", id="javascript-scheme-ASVS-5.1.5"),
]


@pytest.mark.parametrize("target", ADVISORY_SHAPES)
async def test_no_advisory_shape_leads_the_patron_off_the_library_site(
    make_gateway: MakeGateway,
    recorder: RecordingBackend,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    target: str,
) -> None:
    """After logging in, the patron lands on a local path or on "/", never on a host the
    attacker chose (ASVS 5.1.5). An absolute URL is refused even for the gateway's own host:
    only paths are ever redirected to, so no scheme or host can be smuggled along."""
    gw = await make_gateway(routes_for(recorder.port), env={"GATEWAY_PUBLIC_URL": PUBLIC_URL})
    patron = await add_patron(pool, hasher)
    page = await gw.get("/auth/login", params={"next": target})
    assert "evil.example" not in await page.text()
    gw.session.cookie_jar.clear()
    resp = await login(gw, patron.username, next=target)
    assert resp.status == 303
    assert resp.headers["Location"] == "/"


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/reservations/mine?next=//evil.example", id="query-holds-a-url-ASVS-5.1.5"),
        pytest.param("/reservations/@evil.example", id="at-sign-segment-ASVS-5.1.5"),
        pytest.param("/reservations/a%2520b?q=%C3%A9", id="encoded-bytes-kept-ASVS-5.1.5"),
    ],
)
async def test_the_way_back_after_login_is_exactly_the_page_that_asked(
    gw: Gateway,
    recorder: RecordingBackend,
    pool: asyncpg.Pool,
    hasher: PasswordHasher,
    target: str,
) -> None:
    """The 302 to the login carries the original target as one encoded parameter, and the
    login sends the patron back to exactly that local target, not to anything inside it."""
    resp = await gw.get(target, headers={"Accept": "text/html"}, allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/auth/login?next=" + quote(target, safe="")
    assert recorder.requests == []
    patron = await add_patron(pool, hasher)
    done = await login(gw, patron.username, next=target)
    assert done.status == 303
    assert done.headers["Location"] == target


async def test_a_next_holding_markup_is_escaped_in_the_login_form(gw: Gateway) -> None:
    """Reflected XSS through the one parameter the login page echoes (ASVS 5.3.3)."""
    target = '/catalogue?q="><script>alert(1)</script>'
    page = await (await gw.get("/auth/login", params={"next": target})).text()
    assert "<script>alert(1)</script>" not in page
    assert f'value="{markupsafe.escape(target)}"' in page


async def test_a_next_holding_a_header_break_adds_no_header(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Response splitting through the redirect (ASVS 5.3.1): the value is refused whole."""
    patron = await add_patron(pool, hasher)
    resp = await login(gw, patron.username, next="/catalogue%0d%0aSet-Cookie:%20planted=1")
    assert resp.status == 303
    assert resp.headers["Location"] == "/"
    assert not [c for c in resp.headers.getall("Set-Cookie", []) if "planted" in c]


@pytest.mark.parametrize(
    "lang",
    [
        pytest.param("en\r\nSet-Cookie: planted=1", id="CRLF-ASVS-5.3.1"),
        pytest.param("en; Domain=evil.example", id="cookie-attribute-ASVS-5.3.1"),
    ],
)
async def test_the_language_switch_cannot_write_arbitrary_cookies(gw: Gateway, lang: str) -> None:
    """The one parameter that sets a cookie takes only the languages the gateway knows."""
    resp = await gw.get("/auth/login", params={"lang": lang})
    assert resp.status == 200
    for cookie in resp.headers.getall("Set-Cookie", []):
        assert "planted" not in cookie and "evil.example" not in cookie


async def test_logout_ignores_any_next_it_is_given(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """A logout link is an easy thing to get a patron to click; its destination is fixed
    (ASVS 5.1.5)."""
    patron = await add_patron(pool, hasher)
    assert (await login(gw, patron.username)).status == 303
    token = await form_token(gw, "/auth/logout?next=//evil.example")
    resp = await post_form(
        gw, "/auth/logout?next=//evil.example", {"csrf_token": token, "next": "//evil.example"}
    )
    assert resp.status == 303
    assert resp.headers["Location"] == "/auth/login"


async def test_a_path_that_looks_like_a_host_is_not_redirected_anywhere(
    gw: Gateway, recorder: RecordingBackend
) -> None:
    """`//evil.example/` as a request target is a path on this host: it matches no route and
    is answered 404, never turned into a redirect (ASVS 5.1.5)."""
    assert gw.port is not None
    answer = await exchange(
        gw.port,
        b"GET //evil.example/ HTTP/1.1\r\nHost: x\r\n"
        b"Accept: text/html\r\nConnection: close\r\n\r\n",
    )
    head = head_of(answer)
    assert head.startswith("HTTP/1.1 404")
    assert "location:" not in head.lower()
    assert recorder.requests == []
