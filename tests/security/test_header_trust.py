"""Headers a client may send but must never be believed: steering headers that re-route or
re-method a request, forged client addresses, and Connection tricks that would strip the
headers the gateway vouches for.

The backend here records each request exactly as it arrived, so "never reaches the backend"
is checked on the bytes a backend team would see.
"""

from __future__ import annotations

import re

import asyncpg
import pytest

from auth.credentials.passwords import PasswordHasher
from tests.helpers import (
    Gateway,
    MakeGateway,
    add_patron,
    attempt,
    ledger,
    login,
    routes_for,
    unique_pass_number,
)
from tests.security.wire import Received, RecordingBackend

TRUSTED = "127.0.0.1/32, 10.0.0.0/8"


@pytest.fixture
async def gw(make_gateway: MakeGateway, recorder: RecordingBackend) -> Gateway:
    return await make_gateway(routes_for(recorder.port))


@pytest.fixture
async def behind_proxy(make_gateway: MakeGateway, recorder: RecordingBackend) -> Gateway:
    """A gateway that believes X-Forwarded-For from loopback and 10/8, as behind a load
    balancer: the test client plays the load balancer."""
    return await make_gateway(routes_for(recorder.port), env={"GATEWAY_TRUSTED_PROXIES": TRUSTED})


def only(recorder: RecordingBackend) -> Received:
    [request] = recorder.requests
    return request


# --- Steering headers ---------------------------------------------------------------------------

STEERING = [
    pytest.param("X-Original-URL", "/reservations/mine", id="X-Original-URL-CVE-2018-14773"),
    pytest.param("X-Rewrite-URL", "/reservations/mine", id="X-Rewrite-URL-CVE-2018-14773"),
    pytest.param(
        "X-Forwarded-Uri", "/reservations/mine", id="X-Forwarded-Uri-oauth2-proxy-CVE-2026-40575"
    ),
    pytest.param(
        "X-Forwarded-Path",
        "/reservations/mine",
        id="X-Forwarded-Path-oauth2-proxy-GHSA-7x63-xv5r-3p2x",
    ),
    pytest.param("X-HTTP-Method-Override", "DELETE", id="X-HTTP-Method-Override-ASVS-13.2.1"),
    pytest.param("X-HTTP-Method", "DELETE", id="X-HTTP-Method-ASVS-13.2.1"),
    pytest.param("X-Method-Override", "DELETE", id="X-Method-Override-ASVS-13.2.1"),
    pytest.param("X-Original-Method", "DELETE", id="X-Original-Method-ASVS-13.2.1"),
    pytest.param("Proxy", "http://evil.example:3128", id="Proxy-httpoxy-CVE-2016-5385"),
]


@pytest.mark.parametrize(("name", "value"), STEERING)
async def test_a_steering_header_never_reaches_the_backend_nor_changes_path_or_method(
    gw: Gateway, recorder: RecordingBackend, name: str, value: str
) -> None:
    """A backend framework that honours one of these would serve another path or method
    than the one the gateway's access decision was made for. The underscore spelling is
    sent too: PHP and other CGI/WSGI backends read X_Original_URL as HTTP_X_ORIGINAL_URL."""
    resp = await gw.post(
        "/open/form", data=b"x=1", headers={name: value, name.lower().replace("-", "_"): value}
    )
    assert resp.status == 200
    seen = only(recorder)
    assert (seen.method, seen.target) == ("POST", "/open/form")
    assert spelled_as(seen, name) == []


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("X-Original-URL", id="CVE-2018-14773"),
        pytest.param("X-Rewrite-URL", id="CVE-2018-14773-rewrite"),
        pytest.param("X-Forwarded-Uri", id="oauth2-proxy-CVE-2026-40575"),
        pytest.param("X-Forwarded-Path", id="oauth2-proxy-GHSA-7x63-xv5r-3p2x"),
    ],
)
async def test_a_steering_header_naming_a_public_path_does_not_open_a_required_one(
    gw: Gateway, recorder: RecordingBackend, name: str
) -> None:
    """The access decision is made on the request line alone: pointing a header at the
    public opening-hours page does not let an anonymous client into /reservations/mine."""
    resp = await gw.get(
        "/reservations/mine",
        allow_redirects=False,
        headers={name: "/reservations/opening-hours", "Accept": "application/json"},
    )
    assert resp.status == 401
    assert recorder.requests == []


# --- Forged client addresses ----------------------------------------------------------------

FORGED = [
    pytest.param({"X-Forwarded-For": "6.6.6.6"}, id="XFF-single-Caddy-issue-4503"),
    pytest.param({"X-Forwarded-For": "6.6.6.6, 7.7.7.7"}, id="XFF-chain-Caddy-issue-4503"),
    pytest.param({"X-Forwarded-For": "2001:db8::6"}, id="XFF-IPv6-ASVS-14.5.4"),
    pytest.param({"X-Forwarded-For": "127.0.0.1, <script>"}, id="XFF-garbage-ASVS-5.1.3"),
    pytest.param(
        {"Forwarded": "for=6.6.6.6;proto=https;host=evil.example"},
        id="Forwarded-RFC7239-Traefik-CVE-2024-45410",
    ),
    pytest.param({"X-Real-IP": "6.6.6.6"}, id="X-Real-IP-Traefik-CVE-2024-45410"),
    pytest.param(
        {
            "X_Forwarded_For": "6.6.6.6",
            "X_Real_IP": "6.6.6.6",
            "X_Forwarded_Host": "evil.example",
            "X.Forwarded.Proto": "https",
        },
        id="underscore-spellings-WSGI-environ-ASVS-14.5.4",
    ),
]


def spelled_as(seen: Received, name: str) -> list[str]:
    """Every value the backend got under `name` in any spelling a WSGI or CGI server would
    fold into the same environ key ('-', '_' and '.' alike, any case)."""

    def fold(key: str) -> str:
        return key.lower().replace("_", "-").replace(".", "-")

    return [value for key, value in seen.headers if fold(key) == fold(name)]


@pytest.mark.parametrize("forged", FORGED)
async def test_a_forged_client_address_from_an_untrusted_peer_is_replaced_by_the_peer(
    gw: Gateway, recorder: RecordingBackend, forged: dict[str, str]
) -> None:
    """Backends log, rate-limit and geo-block on X-Forwarded-For; without configured trusted
    proxies it is the socket peer and nothing else."""
    resp = await gw.get("/open/x", headers=forged)
    assert resp.status == 200
    seen = only(recorder)
    assert spelled_as(seen, "X-Forwarded-For") == ["127.0.0.1"]
    assert spelled_as(seen, "Forwarded") == spelled_as(seen, "X-Real-IP") == []
    assert spelled_as(seen, "X-Forwarded-Proto") == ["http"]
    assert spelled_as(seen, "X-Forwarded-Host") == ["127.0.0.1:8080"]


FORWARDED_FAMILY = [
    pytest.param("X-Forwarded-Scheme", "https", id="X-Forwarded-Scheme-Rack-nginx"),
    pytest.param("X-Forwarded-Ssl", "on", id="X-Forwarded-Ssl-Rack-Rails"),
    pytest.param("X-Forwarded-Protocol", "https", id="X-Forwarded-Protocol"),
    pytest.param("X-Forwarded-Server", "evil.example", id="X-Forwarded-Server-Apache"),
    pytest.param("X-Forwarded-Port", "443", id="X-Forwarded-Port"),
    pytest.param("X-Forwarded-Prefix", "/evil", id="X-Forwarded-Prefix-Spring"),
    pytest.param("X-Forwarded-Client-Cert", "By=evil;Hash=00", id="XFCC-Envoy"),
]


@pytest.mark.parametrize(("name", "value"), FORWARDED_FAMILY)
async def test_no_x_forwarded_header_of_the_clients_reaches_the_backend(
    gw: Gateway, recorder: RecordingBackend, name: str, value: str
) -> None:
    """Backends are told to believe `X-Forwarded-*` (docs/security.md), and frameworks read
    more of that family than the three the gateway sets: Rack and Rails take the scheme from
    X-Forwarded-Scheme or `X-Forwarded-Ssl: on`, Spring a path prefix from X-Forwarded-Prefix,
    Envoy-fronted services a client certificate from X-Forwarded-Client-Cert. A client that
    could send them would choose the scheme, host, prefix or certificate a backend builds its
    links and trust on (Traefik CVE-2024-45410; ASVS 14.5.4). Every spelling a WSGI or CGI
    server folds together is sent."""
    folded = name.replace("-", "_")
    resp = await gw.get("/open/x", headers={name: value, folded: value, name.upper(): value})
    assert resp.status == 200
    assert spelled_as(only(recorder), name) == []


CLAIMS = [
    pytest.param("Front-End-Https", "on", id="Front-End-Https-IIS-Rails"),
    pytest.param("X-Url-Scheme", "https", id="X-Url-Scheme-Rack"),
    pytest.param("X-Scheme", "https", id="X-Scheme-Tornado-nginx-ingress"),
    pytest.param("X-Original-Host", "evil.example", id="X-Original-Host-ASP.NET"),
    pytest.param("X-Host", "evil.example", id="X-Host-host-override"),
    pytest.param("X-HTTP-Host-Override", "evil.example", id="X-HTTP-Host-Override"),
    pytest.param("Client-IP", "6.6.6.6", id="Client-IP-PHP-HTTP_CLIENT_IP"),
    pytest.param("True-Client-IP", "6.6.6.6", id="True-Client-IP-Akamai-Cloudflare"),
    pytest.param("X-Client-IP", "6.6.6.6", id="X-Client-IP"),
    pytest.param("X-Cluster-Client-IP", "6.6.6.6", id="X-Cluster-Client-IP-Rack"),
    pytest.param("Fastly-Client-IP", "6.6.6.6", id="Fastly-Client-IP"),
    pytest.param("CF-Connecting-IP", "6.6.6.6", id="CF-Connecting-IP"),
    pytest.param("X-Originating-IP", "6.6.6.6", id="X-Originating-IP"),
    pytest.param("X-Remote-IP", "6.6.6.6", id="X-Remote-IP"),
    pytest.param("X-Remote-Addr", "6.6.6.6", id="X-Remote-Addr"),
    pytest.param("X-Original-Forwarded-For", "6.6.6.6", id="X-Original-Forwarded-For"),
]


@pytest.mark.parametrize(("name", "value"), CLAIMS)
async def test_no_client_claim_of_scheme_address_or_host_reaches_the_backend(
    gw: Gateway, recorder: RecordingBackend, name: str, value: str
) -> None:
    """Proxies and CDNs tell backends the scheme, the client's address or the host under
    names of their own, and frameworks believe them: Rails and IIS take `Front-End-Https: on`
    and Rack `X-Url-Scheme` for "the client used https" (secure cookies, redirects), Tornado
    `X-Scheme`, ASP.NET `X-Original-Host` for the host links are built on, PHP's
    HTTP_CLIENT_IP and Rack's X-Cluster-Client-IP for the address an allowlist or a rate
    limit is keyed on. The gateway says these things in `X-Forwarded-*` alone, so a client's
    claim under any other name never arrives, in any spelling (ASVS 14.5.4). A header the
    gateway has no opinion on passes beside it."""
    folded = name.replace("-", "_")
    sent = {name: value, folded: value, name.upper(): value, "X-Catalogue-View": "compact"}
    resp = await gw.get("/open/x", headers=sent)
    assert resp.status == 200
    seen = only(recorder)
    assert spelled_as(seen, name) == []
    assert seen.all("X-Catalogue-View") == ["compact"]
    assert seen.all("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.all("X-Forwarded-Proto") == ["http"]


async def test_a_rotating_forged_address_never_resets_or_splits_the_throttle(
    gw: Gateway, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """A fresh X-Forwarded-For per attempt is the standard way past per-address limits
    (Caddy issue 4503); the gateway counts the socket peer, and the account's counter trips
    after five failures whatever the header says (ASVS 2.2.1)."""
    patron = await add_patron(pool, hasher)
    statuses = []
    for n in range(6):
        status, _ = await attempt(
            gw, patron.username, f"guess {n}", headers={"X-Forwarded-For": f"198.51.100.{n}"}
        )
        statuses.append(status)
    assert statuses == [401] * 5 + [429]
    counters = await ledger(pool)
    assert counters["addr:127.0.0.1"] == 5
    assert not [key for key in counters if key.startswith("addr:198.51.100.")]


# --- Behind configured trusted proxies ------------------------------------------------------

CHAINS = [
    pytest.param(
        ["203.0.113.7"], "addr:203.0.113.7", "203.0.113.7, 127.0.0.1", id="one-hop-Caddy-PR-4507"
    ),
    pytest.param(
        ["6.6.6.6, 203.0.113.7"],
        "addr:203.0.113.7",
        "6.6.6.6, 203.0.113.7, 127.0.0.1",
        id="spoofed-left-entry-ignored-Caddy-PR-4507",
    ),
    pytest.param(
        ["6.6.6.6, 203.0.113.7, 10.1.2.3"],
        "addr:203.0.113.7",
        "6.6.6.6, 203.0.113.7, 10.1.2.3, 127.0.0.1",
        id="inner-trusted-hop-skipped-ASVS-14.5.4",
    ),
    pytest.param(
        ["6.6.6.6, not-an-address, 203.0.113.7"],
        "addr:203.0.113.7",
        "203.0.113.7, 127.0.0.1",
        id="garbage-cuts-the-chain-ASVS-5.1.3",
    ),
    pytest.param(
        ["6.6.6.6", "203.0.113.7"],
        "addr:203.0.113.7",
        "6.6.6.6, 203.0.113.7, 127.0.0.1",
        id="two-header-lines-ASVS-14.5.4",
    ),
    pytest.param(
        ["2001:db8:0:1::6"],
        "addr:2001:db8:0:1::/64",
        "2001:db8:0:1::6, 127.0.0.1",
        id="IPv6-counted-per-64-ASVS-2.2.1",
    ),
]


@pytest.mark.parametrize(("sent", "counted_as", "forwarded"), CHAINS)
async def test_behind_trusted_proxies_the_rightmost_untrusted_entry_is_the_client(
    behind_proxy: Gateway,
    recorder: RecordingBackend,
    pool: asyncpg.Pool,
    sent: list[str],
    counted_as: str,
    forwarded: str,
) -> None:
    """Only the entries the trusted proxies appended can be believed; everything left of the
    first untrusted one from the right was written by the client (right-to-left parsing, as
    Caddy's trusted_proxies_strict and Traefik's forwardedHeaders.trustedIPs do)."""
    headers = [("X-Forwarded-For", value) for value in sent]
    resp = await behind_proxy.get("/open/x", headers=headers)
    assert resp.status == 200
    assert only(recorder).all("X-Forwarded-For") == [forwarded]
    status, _ = await attempt(
        behind_proxy, f"nobody{unique_pass_number()}", "wrong password", headers=headers
    )
    assert status == 401
    assert [key for key in await ledger(pool) if key.startswith("addr:")] == [counted_as]


async def test_behind_trusted_proxies_spraying_with_forged_entries_still_counts_one_address(
    behind_proxy: Gateway, pool: asyncpg.Pool
) -> None:
    """An attacker behind the load balancer prepends a new address to every attempt; the
    load balancer's own entry is what counts, so the per-address limit still holds."""
    for n in range(3):
        status, _ = await attempt(
            behind_proxy,
            f"sprayed{unique_pass_number()}",
            "Summer2024!",
            headers={"X-Forwarded-For": f"198.51.100.{n}, 203.0.113.7"},
        )
        assert status == 401
    counters = await ledger(pool)
    assert counters["addr:203.0.113.7"] == 3
    assert not [key for key in counters if key.startswith("addr:198.51.100.")]


# --- Connection tricks ----------------------------------------------------------------------


async def test_naming_gateway_headers_in_connection_does_not_strip_them(
    gw: Gateway, recorder: RecordingBackend, pool: asyncpg.Pool, hasher: PasswordHasher
) -> None:
    """Traefik CVE-2024-45410 (GHSA-62c8-mh53-4cqv) and CVE-2021-32813: a client lists the
    proxy's own headers as hop-by-hop, and the proxy removes them after adding them. The
    gateway drops only client-sent headers that way; its forwarding and identity headers
    always arrive."""
    patron = await add_patron(pool, hasher, username=f"conn{unique_pass_number()}")
    assert (await login(gw, patron.username)).status == 303
    recorder.requests.clear()
    gateway_headers = [
        "X-Forwarded-For",
        "X-Forwarded-Host",
        "X-Forwarded-Proto",
        "X-Request-Id",
        "X-Library-User-Id",
        "X-Library-Username",
        "X-Library-Pass-Number",
        "X-Library-Identity",
    ]
    resp = await gw.get(
        "/reservations/mine",
        headers={
            "Connection": "keep-alive, " + ", ".join(gateway_headers),
            "Accept": "application/json",
        },
    )
    assert resp.status == 200
    seen = only(recorder)
    for name in gateway_headers:
        assert len(seen.all(name)) == 1, name
    assert seen.all("X-Library-User-Id") == [patron.id]
    assert seen.all("X-Forwarded-For") == ["127.0.0.1"]
    assert seen.all("Connection") == []


# --- W3C Trace Context --------------------------------------------------------------------------

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_TRACEPARENT = f"00-{CLIENT_TRACE}-b7ad6b7169203331-01"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")


def trace_of(received: Received) -> tuple[str, str, str]:
    [value] = received.all("traceparent")
    found = TRACEPARENT.fullmatch(value)
    assert found is not None, value
    trace, span, flags = found.groups()
    return trace, span, flags


async def test_every_request_reaches_the_backend_with_a_trace_of_its_own(
    gw: Gateway, recorder: RecordingBackend
) -> None:
    assert (await gw.get("/open/x")).status == 200
    trace, span, flags = trace_of(only(recorder))
    assert trace != "0" * 32 and span != "0" * 16 and flags == "01"
    recorder.requests.clear()
    await gw.get("/open/x")
    assert trace_of(only(recorder))[0] != trace  # a new trace for a new request


async def test_an_untrusted_clients_trace_is_not_continued(
    gw: Gateway, recorder: RecordingBackend
) -> None:
    """A client may not choose the trace its request is filed under (nor smuggle tracestate
    to the backends): only a trusted proxy continues a trace."""
    sent = {"traceparent": CLIENT_TRACEPARENT, "tracestate": "vendor=forged"}
    assert (await gw.get("/open/x", headers=sent)).status == 200
    received = only(recorder)
    assert trace_of(received)[0] != CLIENT_TRACE
    assert received.all("tracestate") == []


async def test_a_trusted_proxys_trace_is_continued_with_the_gateways_own_span(
    behind_proxy: Gateway, recorder: RecordingBackend
) -> None:
    sent = {"traceparent": CLIENT_TRACEPARENT, "tracestate": "lb=7"}
    assert (await behind_proxy.get("/open/x", headers=sent)).status == 200
    received = only(recorder)
    trace, span, flags = trace_of(received)
    assert trace == CLIENT_TRACE and flags == "01"
    assert span != "b7ad6b7169203331"  # the backend's parent is the gateway's span
    assert received.all("tracestate") == ["lb=7"]
    assert received.all("traceparent") == [f"00-{trace}-{span}-01"]  # one, not two


@pytest.mark.parametrize(
    "malformed",
    [
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # all-zero parent id
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",  # no flags
        "garbage",
    ],
)
async def test_a_malformed_trace_from_a_trusted_proxy_starts_a_new_one(
    behind_proxy: Gateway, recorder: RecordingBackend, malformed: str
) -> None:
    assert (await behind_proxy.get("/open/x", headers={"traceparent": malformed})).status == 200
    trace, _span, _flags = trace_of(only(recorder))
    assert trace != CLIENT_TRACE and trace != "0" * 32
