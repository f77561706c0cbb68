"""Path normalisation and route matching, attacked through the whole gateway.

The classic bypass of an authenticating proxy: the proxy matches one spelling of the path
against its rules, the backend serves another (Envoy CVE-2019-9901, inherited by Pomerium as
CVE-2021-39206; Pomerium CVE-2023-33189). Every target here is sent as raw bytes, so no client
library tidies it first, and the recording backend shows what, if anything, got through.
The unit tests of the normaliser itself are in tests/test_paths.py.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest

from tests.helpers import Gateway, MakeGateway, routes_for
from tests.security.wire import RecordingBackend, exchange, statuses


@pytest.fixture
async def gw(make_gateway: MakeGateway, recorder: RecordingBackend) -> Gateway:
    return await make_gateway(routes_for(recorder.port))


async def request(gw: Gateway, target: str) -> int:
    """The status for a GET of `target` exactly as written (Accept: JSON, no redirects)."""
    assert gw.port is not None
    raw = (
        f"GET {target} HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    ).encode()
    [status] = statuses(await exchange(gw.port, raw))
    return status


# From the public opening-hours page of /reservations (auth: required) to a protected page.
CLIMBS = [
    pytest.param("/reservations/opening-hours/../mine", id="dot-dot-Envoy-CVE-2019-9901"),
    pytest.param("/reservations/opening-hours/%2e%2e/mine", id="encoded-dots-CVE-2021-39206"),
    pytest.param("/reservations/opening-hours/%2E%2e/mine", id="mixed-case-CVE-2021-39206"),
    pytest.param("/reservations/opening-hours/.%2e/mine", id="half-encoded-CVE-2021-39206"),
    pytest.param("/reservations/opening-hours/..%2fmine", id="encoded-slash-CVE-2023-33189"),
    pytest.param("/reservations/opening-hours%2f..%2fmine", id="all-in-one-segment-CVE-2023-33189"),
    pytest.param("/reservations/opening-hours/..;/mine", id="servlet-path-param-CVE-2023-33189"),
    pytest.param("/reservations/opening-hours/..%3b/mine", id="encoded-semicolon-CVE-2023-33189"),
    pytest.param("/reservations/opening-hours\\..\\mine", id="backslashes-ASVS-12.3.1"),
    pytest.param("/reservations/opening-hours/%5c..%5cmine", id="encoded-backslashes-ASVS-12.3.1"),
    pytest.param("/reservations/opening-hours/%c0%ae%c0%ae/mine", id="overlong-utf8-ASVS-13.1.1"),
    pytest.param(
        "/reservations/opening-hours/%ef%bc%8e%ef%bc%8e/mine", id="fullwidth-dots-NFKC-ASVS-13.1.1"
    ),
    pytest.param(
        "/reservations/opening-hours/\uff0e\uff0e/mine", id="raw-fullwidth-dots-ASVS-13.1.1"
    ),
    pytest.param("/reservations/opening-hours/.. /mine", id="trailing-space-dots-ASVS-12.3.1"),
    pytest.param("/open/../reservations/mine", id="public-route-into-required-CVE-2021-39206"),
    pytest.param("/open/%2e%2e/reservations/mine", id="public-route-encoded-CVE-2021-39206"),
    pytest.param("/auth/../reservations/mine", id="through-gateway-prefix-ASVS-13.1.1"),
    pytest.param("/reservations/opening-hours#/../mine", id="fragment-oauth2-proxy-CVE-2026-41059"),
]


@pytest.mark.parametrize("target", CLIMBS)
async def test_climbing_out_of_a_public_path_is_refused_before_any_backend(
    gw: Gateway, recorder: RecordingBackend, target: str
) -> None:
    """Refused with 400 rather than resolved, so no backend ever sees a spelling the access
    decision did not."""
    assert await request(gw, target) == 400
    assert recorder.requests == []


SPELLINGS = [
    # target, status, what the backend receives (None: nothing)
    pytest.param("//reservations/mine", 401, None, id="leading-double-slash-ASVS-13.1.1"),
    pytest.param("/reservations//mine", 401, None, id="inner-double-slash-ASVS-13.1.1"),
    pytest.param("/res%65rvations/mine", 401, None, id="encoded-letter-in-prefix-ASVS-13.1.1"),
    pytest.param("/reservations", 401, None, id="bare-prefix-ASVS-4.1.1"),
    pytest.param(
        "/reservations/opening-hours-and-more",
        401,
        None,
        id="public-path-is-whole-segments-ASVS-4.1.1",
    ),
    pytest.param(
        "/reservations;jsessionid=1/mine", 401, None, id="path-param-on-prefix-CVE-2023-33189"
    ),
    pytest.param("/RESERVATIONS/mine", 404, None, id="case-variant-prefix-ASVS-4.1.1"),
    pytest.param(
        "/reservations/mine?/reservations/opening-hours",
        401,
        None,
        id="query-names-public-path-oauth2-proxy-GHSA-7rh7-c77v-6434",
    ),
    pytest.param(
        "/reservations/%6fpening%2dhours",
        200,
        "/reservations/opening-hours",
        id="public-path-spelled-oddly-reaches-backend-canonical-ASVS-13.1.1",
    ),
    pytest.param(
        "/open/caf%c3%a9/%7euser/a%20b",
        200,
        "/open/caf%C3%A9/~user/a%20b",
        id="one-spelling-for-router-and-backend-ASVS-13.1.1",
    ),
    pytest.param(
        "/open/x?/../reservations/mine",
        200,
        "/open/x?/../reservations/mine",
        id="query-passed-verbatim-never-routed-oauth2-proxy-GHSA-7rh7-c77v-6434",
    ),
]


@pytest.mark.parametrize(("target", "status", "forwarded"), SPELLINGS)
async def test_every_spelling_is_matched_as_the_backend_will_read_it(
    gw: Gateway, recorder: RecordingBackend, target: str, status: int, forwarded: str | None
) -> None:
    """Odd spellings of a protected path still meet the login requirement (or match no route
    at all); a public path reaches its backend in the one canonical spelling it was matched
    in."""
    assert await request(gw, target) == status
    assert [r.target for r in recorder.requests] == ([forwarded] if forwarded else [])


@pytest.mark.parametrize(
    "target",
    [
        pytest.param("/metrics", id="metrics-ASVS-14.3.2"),
        pytest.param("/_gateway/anything", id="gateway-namespace-ASVS-14.3.2"),
        pytest.param("/readyz/../metrics", id="dot-segment-to-admin-ASVS-14.3.2"),
    ],
)
async def test_the_gateways_own_namespaces_are_never_proxied(
    gw: Gateway, recorder: RecordingBackend, target: str
) -> None:
    """Paths the gateway keeps for itself are never handed to a backend, whatever the routes
    say, and never reach the admin endpoints from the public port."""
    assert await request(gw, target) in (400, 404)
    assert recorder.requests == []


SITE_WIDE = """\
routes:
  - name: site
    prefix: /
    backend: http://127.0.0.1:{port}
    auth: public
"""


@pytest.mark.parametrize(
    ("target", "status"),
    [
        pytest.param("/auth/login", 200, id="page"),
        pytest.param("/%61uth/login", 200, id="encoded-letter-still-the-page"),
        pytest.param("/auth/%6Cogin", 200, id="encoded-page-name-still-the-page"),
        pytest.param("//auth/login", 404, id="empty-segment"),
        pytest.param("/auth", 404, id="bare-prefix"),
        pytest.param("/auth/no-such-page", 404, id="unknown-page"),
        pytest.param("/.well-known/jwks.json", 200, id="keys"),
        pytest.param("/healthz", 200, id="health"),
        pytest.param("/%6Detrics", 404, id="encoded-metrics"),
        pytest.param("/_gateway/x", 404, id="gateway-namespace"),
        pytest.param("/auth/login/%2e%2e/x", 400, id="climb-out-of-a-page"),
    ],
)
async def test_a_site_wide_route_never_gets_the_gateways_own_paths(
    make_gateway: MakeGateway, recorder: RecordingBackend, target: str, status: int
) -> None:
    """With a route that claims every path, each spelling of the gateway's own paths is
    still the gateway's: its page in any spelling that names one, a 404 or 400 otherwise,
    and the backend sees none of them (the front door decides on the normalised path)."""
    gw = await make_gateway(SITE_WIDE.format(port=recorder.port))
    assert await request(gw, target) == status
    assert recorder.requests == []
    assert await request(gw, "/authors") == 200  # the route does take everything else
    assert [r.target for r in recorder.requests] == ["/authors"]


STATIC_TRAVERSALS = [
    "/auth/static/../../pyproject.toml",
    "/auth/static/%2e%2e/%2e%2e/pyproject.toml",
    "/auth/static/..%2f..%2fpyproject.toml",
    "/auth/static/%252e%252e/%252e%252e/pyproject.toml",
    "/auth/static/..\\..\\pyproject.toml",
    "/auth/static/..%5c..%5cpyproject.toml",
    "/auth/static/....//....//pyproject.toml",
    "/auth/static/.%2e/passwords.py",
    "/auth/static/%c0%ae%c0%ae/passwords.py",
    "/auth/static/..;/passwords.py",
    "/auth/static//etc/passwd",
    "/auth/static/%2fetc%2fpasswd",
    "/auth/static/style.css%00.py",
]


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(target, id=f"aiohttp-CVE-2024-23334-{n}")
        for n, target in enumerate(STATIC_TRAVERSALS)
    ],
)
async def test_the_static_route_serves_nothing_outside_its_folder(
    gw: Gateway, recorder: RecordingBackend, target: str
) -> None:
    """aiohttp CVE-2024-23334 (GHSA-5h86-8mv2-jq9f): a static route that resolves `..` lets
    a client read any file the process can. The gateway's /auth/static must answer 400 or
    404 for every spelling of a climb, and show nothing of the source tree (ASVS 12.3.1)."""
    assert gw.port is not None
    raw = (f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").encode()
    answer = await exchange(gw.port, raw)
    assert statuses(answer)[0] in (400, 404)
    for secret in (b"[build-system]", b"import ", b"root:"):
        assert secret not in answer
    assert recorder.requests == []


async def test_the_static_folder_lists_nothing_and_serves_its_own_file(
    gw: Gateway,
) -> None:
    """No directory listing (ASVS 4.3.2); the one stylesheet is served, so the refusals above
    are not just a broken route."""
    for listing in ("/auth/static/", "/auth/static"):
        resp = await gw.get(listing)
        assert resp.status in (403, 404)
        assert "style.css" not in await resp.text()
    css = await gw.get("/auth/static/style.css")
    assert css.status == 200
    assert css.headers["Content-Type"].startswith("text/css")
    assert await css.read() == (resources.files("auth") / "static" / "style.css").read_bytes()
    missing = await gw.get("/auth/static/missing.css")
    assert missing.status == 404


ICON_LINK = re.compile(r'<link rel="icon" href="([^"]+)" type="image/svg\+xml">')


async def test_the_gateways_pages_link_their_own_icon_and_leave_favicon_ico_to_the_routes(
    make_gateway: MakeGateway, recorder: RecordingBackend
) -> None:
    """A browser asks for /favicon.ico only when the page names no icon, so the gateway's
    pages name theirs, from its own static folder: no 404 on every page view. /favicon.ico is
    not one of the gateway's paths: a route that claims every path keeps receiving it (a
    backend has an icon of its own), and without such a route it is a 404 like any path no
    route claims."""
    gw = await make_gateway(SITE_WIDE.format(port=recorder.port))
    page = await gw.get("/auth/login")
    assert page.status == 200
    [href] = ICON_LINK.findall(await page.text())
    assert href.startswith("/auth/static/")
    icon = await gw.get(href)
    assert icon.status == 200
    assert icon.headers["Content-Type"].startswith("image/svg+xml")
    assert (await icon.read()).startswith(b"<svg ")
    assert recorder.requests == []
    assert await request(gw, "/favicon.ico") == 200
    assert [r.target for r in recorder.requests] == ["/favicon.ico"]
    alone = await make_gateway(routes_for(recorder.port))
    assert await request(alone, "/favicon.ico") == 404
