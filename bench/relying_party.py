"""The load of bench/oidc.py: a confidential relying party that logs a patron in over and over,
as fast as its workers can, against any OpenID Connect provider found by discovery.

A flow is one authorization with the patron's existing session (response_type=code,
scope=openid, state, nonce, PKCE S256 with a fresh verifier), the code read from the redirect
(never followed), and the code exchanged at the token endpoint with client_secret_basic. A flow
that does not end in a code for our state and an ID token raises `FlowFailed`, which stops the
run: nothing that failed is ever counted. Each worker's first ID tokens are verified against
the provider's JWKS (signature, issuer, audience, nonce).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import html.parser
import json
import secrets
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import aiohttp
import jwt
import psutil
from yarl import URL

CLIENT_ID = "bench-rp"
REDIRECT_URI = "http://127.0.0.1:9/cb"  # the discard port: a code is read from it, never followed
VERIFIED_PER_WORKER = 3


class FlowFailed(Exception):
    """A flow did not end in a code and tokens; the run stops, nothing failed is counted."""


@dataclass(frozen=True)
class Provider:
    """One provider under test, as the relying party sees it, with the patron's session."""

    name: str
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks: jwt.PyJWKSet
    pids: tuple[int, ...]
    """The processes doing the provider's work, their children included (for CPU time)."""


@dataclass(frozen=True)
class Run:
    """One measured stretch of flows against one provider."""

    name: str
    seconds: float
    latencies: list[float]
    cpu_seconds: float
    """User and system time of the provider's processes over the run."""

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def percentile_ms(self, which: int) -> float:
        return statistics.quantiles(self.latencies, n=100)[which - 1] * 1000

    @property
    def cpu_ms_per_flow(self) -> float:
        return self.cpu_seconds / len(self.latencies) * 1000


def pkce_pair() -> tuple[str, str]:
    """A fresh code verifier and its S256 challenge (RFC 7636)."""
    verifier = secrets.token_urlsafe(32)
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def authorization_url(endpoint: str, state: str, nonce: str, challenge: str) -> str:
    query = urlencode(
        {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": REDIRECT_URI,
            "scope": "openid",
            "state": state,
            "nonce": nonce,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    return f"{endpoint}?{query}"


async def flow(client: aiohttp.ClientSession, provider: Provider, secret: str) -> tuple[str, str]:
    """One authorization and code exchange; the ID token and the nonce it must carry."""
    verifier, challenge = pkce_pair()
    state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    url = authorization_url(provider.authorization_endpoint, state, nonce, challenge)
    async with client.get(url, allow_redirects=False) as resp:
        location = resp.headers.get("Location", "")
        await resp.read()
    if resp.status not in (302, 303) or not location.startswith(REDIRECT_URI + "?"):
        raise FlowFailed(f"{provider.name}: authorization answered {resp.status} {location!r}")
    answer = parse_qs(urlsplit(location).query)
    if answer.get("state") != [state] or len(answer.get("code", ())) != 1:
        raise FlowFailed(f"{provider.name}: no code for our state in {location!r}")
    form = {
        "grant_type": "authorization_code",
        "code": answer["code"][0],
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    auth = {"Authorization": aiohttp.encode_basic_auth(CLIENT_ID, secret)}
    async with client.post(provider.token_endpoint, data=form, headers=auth) as resp:
        body = await resp.read()
    tokens = json.loads(body) if resp.status == 200 else {}
    if not isinstance(tokens.get("id_token"), str) or tokens.get("token_type") != "Bearer":
        raise FlowFailed(f"{provider.name}: token endpoint answered {resp.status} {body[:300]!r}")
    return tokens["id_token"], nonce


def verify_id_token(provider: Provider, id_token: str, nonce: str) -> None:
    """The ID token is a JWT signed by a key of the provider's JWKS, for our client."""
    try:
        kid = jwt.get_unverified_header(id_token).get("kid")
        key = next(k for k in provider.jwks.keys if k.key_id == kid)
        claims = jwt.decode(
            id_token,
            key,
            algorithms=["RS256"],
            audience=CLIENT_ID,
            issuer=provider.issuer,
            options={"require": ["sub", "exp", "iat"]},
        )
    except (jwt.PyJWTError, StopIteration) as exc:
        raise FlowFailed(f"{provider.name}: ID token refused: {exc!r}") from exc
    if claims.get("nonce") != nonce:
        raise FlowFailed(f"{provider.name}: ID token for another nonce")


def cpu_times(pids: Sequence[int]) -> dict[int, float]:
    """User plus system seconds of each of these processes and of all their descendants."""
    seen: dict[int, float] = {}
    for pid in pids:
        root = psutil.Process(pid)
        for process in (root, *root.children(recursive=True)):
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                seen[process.pid] = times.user + times.system
    return seen


def cpu_spent(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds between two `cpu_times`; a process started in between counts whole."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


async def measure(
    provider: Provider, cookies: Sequence[str], secret: str, seconds: float, concurrency: int
) -> Run:
    """`concurrency` workers, one connection each, doing flows for `seconds`; every flow
    started in that time is counted, and the run lasts until the last one ends. Worker `i`
    is a browser holding the session of `cookies[i % len(cookies)]` (a Cookie header)."""
    latencies: list[float] = []
    deadline = time.monotonic() + seconds

    async def worker(cookie: str) -> None:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=1),
            # The session's cookie on every request, as the browser would send it.
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"Cookie": cookie},
        ) as client:
            verified = 0
            while time.monotonic() < deadline:
                started = time.perf_counter()
                id_token, nonce = await flow(client, provider, secret)
                latencies.append(time.perf_counter() - started)
                if verified < VERIFIED_PER_WORKER:
                    verify_id_token(provider, id_token, nonce)
                    verified += 1

    cpu_before = cpu_times(provider.pids)
    started = time.perf_counter()
    await asyncio.gather(*(worker(cookies[i % len(cookies)]) for i in range(concurrency)))
    elapsed = time.perf_counter() - started
    return Run(provider.name, elapsed, latencies, cpu_spent(cpu_before, cpu_times(provider.pids)))


async def discover(name: str, issuer: str, pids: tuple[int, ...]) -> Provider:
    """The provider's endpoints and keys, from its discovery document and JWKS."""
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{issuer}/.well-known/openid-configuration") as resp:
            document = await resp.json()
        async with client.get(document["jwks_uri"]) as resp:
            jwks = jwt.PyJWKSet.from_dict(await resp.json())
    if document["issuer"] != issuer:
        raise FlowFailed(f"{name}: discovery names the issuer {document['issuer']}, not {issuer}")
    return Provider(
        name=name,
        issuer=issuer,
        authorization_endpoint=document["authorization_endpoint"],
        token_endpoint=document["token_endpoint"],
        jwks=jwks,
        pids=pids,
    )


class _Form(html.parser.HTMLParser):
    """The first POST form of a page: its action and its inputs' names and values."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and self.action is None and values.get("method", "").lower() == "post":
            self.action, self._inside = values.get("action", ""), True
        elif tag == "input" and self._inside and values.get("name"):
            self.fields[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


async def log_in_through_pages(issuer: str, login: str, password: str) -> str:
    """Log in once as a browser would, through the provider's own pages: follow the
    authorization's redirects and submit each form it shows (its `login` and `password`
    fields filled in, every other field as given: a consent page is allowed) until the
    redirect back to the client. The Cookie header the authorization endpoint then sees."""
    jar = aiohttp.CookieJar(unsafe=True)  # keeps cookies for 127.0.0.1
    async with aiohttp.ClientSession(cookie_jar=jar) as client:
        async with client.get(f"{issuer}/.well-known/openid-configuration") as resp:
            endpoint = (await resp.json())["authorization_endpoint"]
        url = authorization_url(endpoint, "login", "login", pkce_pair()[1])
        for _ in range(12):  # oidc-provider: login page, resume, consent page, resume, code
            async with client.get(url, allow_redirects=False) as resp:
                location = resp.headers.get("Location")
                page = await resp.text()
            if location is None:
                form = _Form()
                form.feed(page)
                if form.action is None:
                    raise FlowFailed(f"{issuer}: no form and no redirect at {url} ({resp.status})")
                fields = form.fields
                if "login" in fields:
                    fields.update(login=login, password=password)
                target = urljoin(url, form.action)
                async with client.post(target, data=fields, allow_redirects=False) as resp:
                    location = resp.headers.get("Location")
                if location is None:
                    raise FlowFailed(f"{issuer}: the form at {url} answered {resp.status}")
            if location.startswith(REDIRECT_URI):
                break
            url = urljoin(url, location)
        else:
            raise FlowFailed(f"{issuer}: the login did not come back to the client")
        cookies = jar.filter_cookies(URL(endpoint))
    return "; ".join(f"{name}={morsel.value}" for name, morsel in cookies.items())
