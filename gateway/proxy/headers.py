"""Which headers cross the gateway, in each direction.

Pure functions over header multidicts: no aiohttp.web, no I/O. The sets are built once at import;
the functions run once per proxied request, so they make one pass over the headers.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import random
import re
from collections.abc import Iterable
from typing import NamedTuple

from multidict import CIMultiDict, CIMultiDictProxy

from auth.credentials.devices import COOKIE_NAME as DEVICE_COOKIE
from auth.sessions.cookies import COOKIE_NAME as SESSION_COOKIE

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Headers = CIMultiDict[str] | CIMultiDictProxy[str]

# RFC 9110 §7.6.1 plus the de-facto ones (Keep-Alive, Proxy-Connection) that proxies drop.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

# Set by the gateway itself from trusted data; whatever a client sends under these names is dropped.
_REPLACED = frozenset(
    {
        "host",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "forwarded",
        "x-real-ip",
        "x-request-id",
        "content-length",
        # The gateway answered the client's Expect itself; the backend gets the body outright.
        "expect",
        # W3C Trace Context: the gateway's own (`trace_context`), continued from a trusted
        # proxy only.
        "traceparent",
        "tracestate",
    }
)

# Headers some frameworks honour to re-route or re-method a request behind a proxy
# (Symfony/IIS X-Original-URL, X-Rewrite-URL, Traefik X-Forwarded-Uri, method overrides), and
# `Proxy`, which CGI-style backends expose as HTTP_PROXY and so re-route their own outgoing
# requests through the client's host (httpoxy, CVE-2016-5385).
_STEERING = frozenset(
    {
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-uri",
        "x-forwarded-path",
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x-original-method",
        "proxy",
    }
)

# Where proxies and CDNs other than the gateway tell a backend the scheme, the client's address
# or the host, and frameworks believe it: `Front-End-Https: on` (IIS, Rails) and X-Url-Scheme
# (Rack) for "the client used https", X-Scheme (Tornado), X-Original-Host (ASP.NET) and the
# host overrides for the host links are built on, the client-address family (PHP's
# HTTP_CLIENT_IP, Rack's X-Cluster-Client-IP, the CDNs' own) for allowlists and rate limits.
# The gateway says all of this in X-Forwarded-* alone; a client's claim under another name is
# dropped like its X-Forwarded-*.
_CLAIMS = frozenset(
    {
        "front-end-https",
        "x-url-scheme",
        "x-scheme",
        "x-original-host",
        "x-host",
        "x-http-host-override",
        "client-ip",
        "true-client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
        "fastly-client-ip",
        "cf-connecting-ip",
        "x-originating-ip",
        "x-remote-ip",
        "x-remote-addr",
        "x-original-forwarded-for",
    }
)

# Response headers the gateway owns: its own banner, nothing that changes framing, and HSTS,
# which pins the whole public host and so is the gateway's to send or not (a backend's
# `max-age=0` would unpin it, a backend's HSTS behind an http public URL would pin a host
# that has no TLS).
_RESPONSE_DROPPED = HOP_BY_HOP | {"server", "content-length", "date", "strict-transport-security"}

IDENTITY_PREFIX = "x-library-"
# The whole X-Forwarded- family is the gateway's to speak (backends are told to believe it):
# frameworks read more of it than the three the gateway sets (Rack's -Scheme and -Ssl,
# Spring's -Prefix, Envoy's -Client-Cert), so a client's never passes, whatever its name.
FORWARDED_PREFIX = "x-forwarded-"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


@functools.lru_cache(maxsize=256)
def _tokens(value: str) -> frozenset[str]:
    """The header names listed in one Connection or Vary value, in lower case (values
    repeat: a backend sends the same `keep-alive` on every answer)."""
    return frozenset(token.strip().lower() for token in value.split(",") if token.strip())


def _connection_tokens(headers: Headers) -> frozenset[str]:
    tokens: set[str] = set()
    for value in headers.getall("Connection", ()):
        tokens |= _tokens(value)
    return frozenset(tokens)


def _folded(name: str) -> str:
    # `X_Library-User.Id` reaches some frameworks as X-Library-User-Id (WSGI and CGI turn '-'
    # and '_' into the same key), so every spoofing check must treat the spellings alike.
    return name.lower().replace("_", "-").replace(".", "-")


def request_id(sent: str | None) -> str:
    """Keep the client's request id when it is sane, else make one."""
    if sent is not None and _REQUEST_ID.fullmatch(sent):
        return sent
    # Unique, not secret: the Mersenne Twister is plenty and costs no system call.
    return f"{random.getrandbits(128):032x}"


def client_address(peer: str, forwarded_for: str | None, trusted: Iterable[Network]) -> str:
    """The patron's address: the socket peer, or, behind trusted proxies, the rightmost
    X-Forwarded-For entry that is not itself a trusted proxy."""
    trusted = tuple(trusted)
    if not trusted:
        return peer
    chain = forwarded_chain(peer, forwarded_for, trusted)
    for address in reversed(chain):
        if not is_trusted(address, trusted):
            return address
    return chain[0]


def forwarded_chain(peer: str, forwarded_for: str | None, trusted: Iterable[Network]) -> list[str]:
    """X-Forwarded-For as it should leave the gateway: the client-sent chain survives only when
    the peer is a trusted proxy; otherwise it is replaced by the peer alone."""
    trusted = tuple(trusted)
    if not trusted or not forwarded_for or not is_trusted(peer, trusted):
        return [peer]
    chain: list[str] = []
    for item in forwarded_for.split(","):
        address = item.strip()
        try:
            ipaddress.ip_address(address)
        except ValueError:
            # A garbage entry makes everything left of it unknowable; start over from here.
            chain = []
            continue
        chain.append(address)
    chain.append(peer)
    return chain


def is_trusted(address: str, trusted: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


class TraceContext(NamedTuple):
    """W3C Trace Context for one request: the trace it belongs to, the gateway's own span in
    it (the parent the backend sees), and the flags; `parent_id` is the span of the trusted
    proxy that sent the trace (None for a trace the gateway began)."""

    trace_id: str
    span_id: str
    flags: str
    state: str | None = None
    parent_id: str | None = None

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{self.flags}"


def trace_context(
    traceparent: str | None, tracestate: str | None, *, trusted_peer: bool
) -> TraceContext:
    """The request's trace: the one in `traceparent` when a trusted proxy sent a valid one
    (version 00, ids not all zeros), else a new one (sampled). Either way the gateway's span
    gets an id of its own."""
    ids = os.urandom(24).hex()
    span = ids[32:]
    if trusted_peer and traceparent is not None:
        found = _TRACEPARENT.fullmatch(traceparent.strip())
        if found and found.group(1) != _ZERO_TRACE and found.group(2) != _ZERO_SPAN:
            state = tracestate.strip() if tracestate and len(tracestate) <= 512 else None
            return TraceContext(found.group(1), span, found.group(3), state, found.group(2))
    return TraceContext(ids[:32], span, "01")


def strip_cookie(cookie_header: str, name: str) -> str | None:
    """The Cookie header without the gateway's own cookie (None when nothing is left)."""
    if name not in cookie_header:
        return cookie_header
    kept = []
    for part in cookie_header.split(";"):
        key = part.split("=", 1)[0].strip()
        if key and key != name:
            kept.append(part.strip())
    return "; ".join(kept) or None


# What happens to a header, decided once per header name (names repeat on every request).
_FORWARD, _DROP, _COOKIE, _WEBSOCKET, _LENGTH, _CONNECTION, _SET_COOKIE = range(7)
# Forwarded, and noted, in an answer meant for one patron (`_personal_response_rule`).
_CACHE_CONTROL, _VARY = 7, 8


@functools.lru_cache(maxsize=1024)
def _request_rule(name: str) -> tuple[str, int]:
    lower = name.lower()
    folded = _folded(lower)
    if (
        lower in HOP_BY_HOP
        or folded in _REPLACED
        or folded in _STEERING
        or folded in _CLAIMS
        or folded.startswith(IDENTITY_PREFIX)
        or folded.startswith(FORWARDED_PREFIX)
    ):
        return lower, _DROP
    if lower == "cookie":
        return lower, _COOKIE
    if lower.startswith("sec-websocket-"):
        return lower, _WEBSOCKET
    return lower, _FORWARD


def upstream_request_headers(
    client: Headers,
    *,
    backend_host: str,
    forwarded_for: str,
    public_proto: str,
    public_host: str,
    request_id: str,
    cookie_name: str,
    identity: Iterable[tuple[str, str]],
    trace: TraceContext | None = None,
    websocket: bool = False,
) -> list[tuple[str, str]]:
    """Headers for the backend: the client's, minus hop-by-hop, spoofable and gateway-owned
    ones, plus the forwarding and identity headers the gateway vouches for."""
    named_in_connection = _connection_tokens(client) if "Connection" in client else frozenset()
    out = [("Host", backend_host)]
    for name, value in client.items():
        lower, rule = _request_rule(name)
        if rule == _DROP or lower in named_in_connection:
            continue
        if rule == _COOKIE:
            remaining = strip_cookie(value, cookie_name)
            if remaining is None:
                continue
            value = remaining
        elif rule == _WEBSOCKET and websocket:
            continue  # the gateway's own WebSocket client negotiates with the backend
        out.append((name, value))
    length = client.get("Content-Length")
    if length is not None and "chunked" not in client.get("Transfer-Encoding", "").lower():
        out.append(("Content-Length", length))
    out += (
        ("X-Forwarded-For", forwarded_for),
        ("X-Forwarded-Proto", public_proto),
        ("X-Forwarded-Host", public_host),
        ("X-Request-Id", request_id),
    )
    if trace is not None:
        out.append(("traceparent", trace.traceparent))
        if trace.state:
            out.append(("tracestate", trace.state))
    out += identity
    return out


@functools.lru_cache(maxsize=1024)
def _response_rule(name: str) -> tuple[str, int]:
    lower = name.lower()
    if lower == "content-length":
        return lower, _LENGTH
    if lower == "connection":
        return lower, _CONNECTION
    if lower in _RESPONSE_DROPPED:
        return lower, _DROP
    if lower == "set-cookie":
        return lower, _SET_COOKIE
    return lower, _FORWARD


@functools.lru_cache(maxsize=1024)
def _personal_response_rule(name: str) -> tuple[str, int]:
    # A table of its own, so that an anonymous answer's headers take the very same branches
    # they always did.
    lower, rule = _response_rule(name)
    if lower == "cache-control":
        return lower, _CACHE_CONTROL
    if lower == "vary":
        return lower, _VARY
    return lower, rule


def downstream_response_headers(
    upstream: Iterable[tuple[str, str]], *, cookie_name: str, personal: bool = False
) -> tuple[list[tuple[str, str]], int | None, bool]:
    """Headers for the client from a backend's response, its Content-Length, and whether the
    backend let shared caches keep an answer meant for one patron: hop-by-hop and framing
    removed, no backend may set or clear the gateway's session cookie, and a `personal`
    answer (the backend was told who asked) is kept out of shared caches (`_for_one_patron`)."""
    out: list[tuple[str, str]] = []
    length: int | None = None
    named_in_connection: set[str] = set()
    cache_control: str | None = None
    vary: str | None = None
    vary_at = -1  # where the one Vary field is in `out`; -1 for none or several
    rule_of = _personal_response_rule if personal else _response_rule
    for name, value in upstream:
        _, rule = rule_of(name)
        if rule == _FORWARD:
            out.append((name, value))
        elif rule == _LENGTH:
            length = int(value) if value.isdigit() else None
        elif rule == _CONNECTION:
            named_in_connection |= _tokens(value)
        elif rule == _SET_COOKIE:
            if not _sets_cookie(value, cookie_name):
                out.append((name, value))
        elif rule > _SET_COOKIE:  # only in a personal answer's table
            if rule == _CACHE_CONTROL:
                cache_control = value if cache_control is None else f"{cache_control}, {value}"
            elif vary is None:
                vary_at, vary = len(out), value
            else:
                vary_at, vary = -1, f"{vary}, {value}"
            out.append((name, value))
    if named_in_connection - HOP_BY_HOP:
        # What the client will not see is no policy of the backend's.
        if "cache-control" in named_in_connection:
            cache_control = None
        if "vary" in named_in_connection:
            vary, vary_at = None, -1
        elif vary_at > 0:  # the one Vary field moves up past the fields that go
            vary_at -= sum(
                _response_rule(name)[0] in named_in_connection for name, _ in out[:vary_at]
            )
        out = [
            (name, value)
            for name, value in out
            if _response_rule(name)[0] not in named_in_connection
        ]
    shared = personal and _for_one_patron(out, cache_control, vary, vary_at)
    return out, length, shared


def _for_one_patron(
    out: list[tuple[str, str]], cache_control: str | None, vary: str | None, vary_at: int
) -> bool:
    """Keep an answer made for one patron out of shared caches: `Cache-Control: private`
    when the backend chose no policy, and `Vary: Cookie` so that no cache hands it to another
    browser. A backend's own policy stands; the result says whether it let shared caches
    keep the answer (the caller warns)."""
    if vary is None:
        out.append(("Vary", "Cookie"))
    else:
        merged = _vary_with_cookie(vary)
        if merged is not None:
            if vary_at >= 0:
                out[vary_at] = (out[vary_at][0], merged)
            else:
                # Several Vary fields are one list (RFC 9110 5.3): one more field joins it.
                out.append(("Vary", "Cookie"))
    if cache_control is None:
        out.append(("Cache-Control", "private"))
        return False
    return _shared_caches_may_keep(cache_control)


@functools.lru_cache(maxsize=256)
def _vary_with_cookie(vary: str) -> str | None:
    """A backend's Vary with Cookie added; None when it needs none (it names Cookie, or `*`,
    which varies on everything already). Values repeat, like Connection's."""
    if _tokens(vary) & {"*", "cookie"}:
        return None
    return f"{vary}, Cookie" if vary.strip() else "Cookie"


@functools.lru_cache(maxsize=256)
def _shared_caches_may_keep(cache_control: str) -> bool:
    """Whether a Cache-Control value lets a shared cache store the answer outright (RFC 9111
    5.2.2: `public` or `s-maxage`, unless `private` or `no-store` says otherwise)."""
    directives = {part.split("=", 1)[0].strip().lower() for part in cache_control.split(",")}
    return bool(directives & {"public", "s-maxage"}) and not directives & {"private", "no-store"}


def keep_from_shared_caches(out: CIMultiDict[str]) -> None:
    """Make an answer that carries the gateway's own Set-Cookie (a session refreshed or
    cleared) one that no shared cache stores: `public` and `s-maxage` go, `private` is added
    unless `private` or `no-store` is there. The backend's policy may stand for its page,
    never for the patron's cookie, which a stored copy would hand to the next person. Runs
    only for the answers that carry the cookie (at most one a minute per session)."""
    kept: list[str] = []
    private = False
    for value in out.getall("Cache-Control", ()):
        for part in value.split(","):
            directive = part.strip()
            name = directive.split("=", 1)[0].strip().lower()
            if not directive or name in ("public", "s-maxage"):
                continue
            # A `private` that names fields keeps only those from shared caches.
            private = private or name == "no-store" or directive.lower() == "private"
            kept.append(directive)
    if not private:
        kept.append("private")
    out["Cache-Control"] = ", ".join(kept)


BANNER = "library-gateway"
# One year, every subdomain; no `preload`, which is a promise to the browsers' preload list
# that an operator makes deliberately (hstspreload.org), not a default.
HSTS = "max-age=31536000; includeSubDomains"


def stamp_response(out: CIMultiDict[str], request_id: str | None, https: bool) -> None:
    """What every response of the gateway carries, the backends' and its own: its banner
    in place of the backend's, nosniff, the request id and, when served over HTTPS, its
    HSTS (a backend's own never gets through, see `_RESPONSE_DROPPED`)."""
    out["Server"] = BANNER
    out.setdefault("X-Content-Type-Options", "nosniff")
    if request_id is not None:
        out["X-Request-Id"] = request_id
    if https:
        out["Strict-Transport-Security"] = HSTS


# The cookies no backend may set or clear, in every name the gateway gives them (the session's,
# and the login's device cookie, which vouches for the patron's own browser), in lower case.
_GATEWAY_COOKIES = frozenset(
    f"{prefix}{base}".lower()
    for base in (SESSION_COOKIE, DEVICE_COOKIE)
    for prefix in ("", "__Host-", "__Secure-")
)


def _sets_cookie(set_cookie: str, name: str) -> bool:
    """Whether a backend's Set-Cookie would set or clear one of the gateway's cookies."""
    key, sep, value = set_cookie.split(";", 1)[0].partition("=")
    key = key.strip()
    if sep and not key:
        # A pair with an empty name (`=library_session=x`) makes a nameless cookie, which
        # browsers send back as its value alone: `library_session=x` (RFC 6265bis 5.6).
        key = value.split("=", 1)[0].strip()
    # Browsers match the `__Host-` prefix without regard to case, so compare that way.
    key = key.lower()
    return key == name.lower() or key in _GATEWAY_COOKIES
