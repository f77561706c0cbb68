"""Which headers cross the gateway, in each direction.

Pure functions over header multidicts: no aiohttp.web, no I/O. The sets are built once at import;
the functions run once per proxied request, so they make one pass over the headers.
"""

from __future__ import annotations

import ipaddress
import random
import re
from collections.abc import Iterable, Mapping

from multidict import CIMultiDict, CIMultiDictProxy

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Headers = CIMultiDict[str] | CIMultiDictProxy[str]

# RFC 9110 §7.6.1 plus the de-facto ones (Keep-Alive, Proxy-Connection) that proxies drop.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
    "te", "trailer", "transfer-encoding", "upgrade",
})

# Set by the gateway itself from trusted data; whatever a client sends under these names is dropped.
_REPLACED = frozenset({
    "host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port",
    "x-forwarded-prefix", "forwarded", "x-real-ip", "x-request-id", "content-length",
    # The gateway answered the client's Expect itself; the backend gets the body outright.
    "expect",
})

# Headers some frameworks honour to re-route or re-method a request behind a proxy
# (Symfony/IIS X-Original-URL, X-Rewrite-URL, Traefik X-Forwarded-Uri, method overrides), and
# `Proxy`, which CGI-style backends expose as HTTP_PROXY and so re-route their own outgoing
# requests through the client's host (httpoxy, CVE-2016-5385).
_STEERING = frozenset({
    "x-original-url", "x-rewrite-url", "x-forwarded-uri", "x-forwarded-path",
    "x-http-method-override", "x-http-method", "x-method-override", "x-original-method",
    "proxy",
})

# Response headers the gateway owns: its own banner, and nothing that changes framing.
_RESPONSE_DROPPED = HOP_BY_HOP | {"server", "content-length", "date"}

IDENTITY_PREFIX = "x-library-"
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def _connection_tokens(headers: Headers) -> frozenset[str]:
    tokens: set[str] = set()
    for value in headers.getall("Connection", ()):
        tokens.update(token.strip().lower() for token in value.split(",") if token.strip())
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
        if not _is_trusted(address, trusted):
            return address
    return chain[0]


def forwarded_chain(peer: str, forwarded_for: str | None, trusted: Iterable[Network]) -> list[str]:
    """X-Forwarded-For as it should leave the gateway: the client-sent chain survives only when
    the peer is a trusted proxy; otherwise it is replaced by the peer alone."""
    trusted = tuple(trusted)
    if not trusted or not forwarded_for or not _is_trusted(peer, trusted):
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


def _is_trusted(address: str, trusted: Iterable[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


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


def upstream_request_headers(
    client: Headers,
    *,
    backend_host: str,
    forwarded_for: str,
    public_proto: str,
    public_host: str,
    request_id: str,
    cookie_name: str,
    identity: Mapping[str, str],
    websocket: bool = False,
) -> CIMultiDict[str]:
    """Headers for the backend: the client's, minus hop-by-hop, spoofable and gateway-owned
    ones, plus the forwarding and identity headers the gateway vouches for."""
    named_in_connection = _connection_tokens(client)
    out: CIMultiDict[str] = CIMultiDict()
    out["Host"] = backend_host
    for name, value in client.items():
        lower = name.lower()
        folded = _folded(lower)
        if (
            lower in HOP_BY_HOP
            or folded in _REPLACED
            or folded in _STEERING
            or lower in named_in_connection
            or folded.startswith(IDENTITY_PREFIX)
            or (websocket and lower.startswith("sec-websocket-"))
        ):
            continue
        if lower == "cookie":
            remaining = strip_cookie(value, cookie_name)
            if remaining is None:
                continue
            value = remaining
        out.add(name, value)
    if client.get("Content-Length") is not None and "chunked" not in client.get(
        "Transfer-Encoding", ""
    ).lower():
        out["Content-Length"] = client["Content-Length"]
    out["X-Forwarded-For"] = forwarded_for
    out["X-Forwarded-Proto"] = public_proto
    out["X-Forwarded-Host"] = public_host
    out["X-Request-Id"] = request_id
    out.update(identity)
    return out


def downstream_response_headers(
    upstream: Iterable[tuple[str, str]], *, cookie_name: str
) -> tuple[CIMultiDict[str], int | None]:
    """Headers for the client from a backend's response, and its Content-Length: hop-by-hop
    and framing removed, and no backend may set or clear the gateway's session cookie."""
    items = list(upstream)
    named_in_connection = frozenset(
        token.strip().lower()
        for name, value in items if name.lower() == "connection"
        for token in value.split(",") if token.strip()
    )
    out: CIMultiDict[str] = CIMultiDict()
    length: int | None = None
    for name, value in items:
        lower = name.lower()
        if lower == "content-length":
            length = int(value) if value.isdigit() else None
            continue
        if lower in _RESPONSE_DROPPED or lower in named_in_connection:
            continue
        if lower == "set-cookie" and _sets_cookie(value, cookie_name):
            continue
        out.add(name, value)
    return out, length


def _sets_cookie(set_cookie: str, name: str) -> bool:
    # Browsers match the `__Host-` prefix without regard to case, so compare that way.
    key = set_cookie.split("=", 1)[0].strip()
    return key.lower() == name.lower()
