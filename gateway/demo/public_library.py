"""Bibliotheek Rivierenland: a public library's own site, for `library-gateway demo`, that logs
patrons in through the gateway's OpenID Connect provider.

It stands for a library that is not behind the proxy: its own address (127.0.0.2, so that its
cookies and the gateway's never mix), its own house colours and its own sessions. It logs
patrons in the way any connected library would, with Authlib, an OpenID Connect client library
nobody here wrote: the authorization code flow with PKCE S256, state and nonce; the code
exchanged with the client's secret; the ID token checked against the provider's published
keys (signature, iss, aud, nonce, exp, at_hash). It hears of the end of a gateway session
through OpenID Connect Back-Channel Logout 1.0 (`/logout/backchannel`, registered with the
gateway) and ends its own sessions of that login. Like the other demo services it plays
another team's code, so it imports nothing from the gateway or auth. docs/federation.md shows
the same client, shorter.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx2
import jinja2
from aiohttp import web
from authlib.common.errors import AuthlibBaseError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

NAME = "Bibliotheek Rivierenland"
HOUSE_COLOUR = "#00704a"
TEXT_COLOUR = "#ffffff"
HOST = "127.0.0.2"
"""Another loopback address than the gateway's 127.0.0.1: cookies are kept per host, not per
port, so the site's cookies and the gateway's stay apart as on two real domains."""

SCOPE = "openid profile email library"
ID_TOKEN_ALGORITHMS = ["RS256"]  # what the site registered (the provider's default)
CALLBACK_PATH = "/callback"
BACKCHANNEL_LOGOUT_PATH = "/logout/backchannel"
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# A logout token says what it is (Back-Channel Logout 1.0, 2.4); RFC 7515 4.1.9 lets the
# media type go with or without its "application/", in any case.
LOGOUT_TOKEN_TYPES = ("logout+jwt", "application/logout+jwt")
LOGIN_TTL = 600
"""Seconds a patron may take between leaving for the gateway and coming back."""
LEEWAY = 60
"""Seconds of clock difference forgiven when checking exp and iat."""
MAX_VISITS = 10_000
SESSION_COOKIE = "rivierenland"
LOGIN_COOKIE = "rivierenland_login"
_SHOWN_CLAIMS = (
    "preferred_username",
    "email",
    "pass_number",
    "sub",
    "sid",
    "iss",
    "aud",
    "auth_time",
    "exp",
)
_TIMES = ("auth_time", "exp")
_ENDPOINTS = ("authorization_endpoint", "token_endpoint", "jwks_uri")


@dataclass(frozen=True)
class Registration:
    """What the library registered with the gateway's operator (their clients.yaml entry)."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    redirect_uri: str


class LoginFailed(Exception):
    """A callback that logs nobody in; the message is shown to the patron."""


class LogoutRefused(Exception):
    """A back-channel logout request whose token is not a valid logout token for this site."""


@dataclass(frozen=True)
class _Login:
    """A login under way: what the callback must match."""

    state: str
    nonce: str
    code_verifier: str
    started: float = field(default_factory=time.monotonic)


class _Visits:
    """The browsers the site knows, by the random value of their cookie: logins under way
    and the patrons logged in. In memory for the life of the demo, the oldest forgotten first
    beyond `limit`."""

    def __init__(self, limit: int = MAX_VISITS) -> None:
        self._logins: dict[str, _Login] = {}
        self._patrons: dict[str, dict[str, Any]] = {}
        self._limit = limit

    def start_login(self, login: _Login) -> str:
        return self._keep(self._logins, login)

    def finish_login(self, key: str | None) -> _Login | None:
        """The login started under `key`, once: a second callback finds nothing."""
        login = self._logins.pop(key, None) if key else None
        if login is None or time.monotonic() - login.started > LOGIN_TTL:
            return None
        return login

    def log_in(self, claims: dict[str, Any]) -> str:
        return self._keep(self._patrons, claims)

    def patron(self, key: str | None) -> dict[str, Any] | None:
        return self._patrons.get(key) if key else None

    def log_out(self, key: str | None) -> None:
        if key:
            self._patrons.pop(key, None)

    def end_sessions(self, *, sid: str | None, sub: str | None) -> int:
        """End every session started from an ID token of gateway session `sid` (and of
        patron `sub`, when given); with `sub` alone, every session of that patron. Returns
        how many ended."""
        ended = [
            key
            for key, claims in self._patrons.items()
            if (sid is None or claims.get("sid") == sid)
            and (sub is None or claims.get("sub") == sub)
        ]
        for key in ended:
            del self._patrons[key]
        return len(ended)

    def _keep(self, table: dict[str, Any], value: Any) -> str:
        key = secrets.token_urlsafe(32)
        table[key] = value
        while len(table) > self._limit:
            del table[next(iter(table))]
        return key


class _Provider:
    """The gateway as this site sees it: its discovery document and its keys, fetched when
    first needed (the gateway may start after the site) and kept."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self.http: httpx2.AsyncClient | None = None
        self._metadata: dict[str, Any] | None = None
        self._keys: KeySet | None = None

    async def _get(self, url: str) -> dict[str, Any]:
        assert self.http is not None, "the site's HTTP client starts with the application"
        try:
            resp = await self.http.get(url)
            resp.raise_for_status()
            document = resp.json()
        except (httpx2.HTTPError, ValueError) as exc:
            raise LoginFailed(f"The library's login service cannot be reached ({exc}).") from exc
        if not isinstance(document, dict):
            raise LoginFailed("The library's login service gave an answer we cannot read.")
        return document

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            metadata = await self._get(self.issuer + "/.well-known/openid-configuration")
            # OpenID Connect Discovery 4.3: the document must name the issuer we asked.
            if metadata.get("issuer") != self.issuer:
                raise LoginFailed("The login service's discovery document names another issuer.")
            if not all(isinstance(metadata.get(name), str) for name in _ENDPOINTS):
                raise LoginFailed("The login service's discovery document lacks an endpoint.")
            self._metadata = metadata
        return self._metadata

    async def keys(self, *, fresh: bool = False) -> KeySet:
        if self._keys is None or fresh:
            jwks = await self._get((await self.metadata())["jwks_uri"])
            self._keys = KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        return self._keys


class _Site:
    def __init__(self, registration: Registration) -> None:
        self.registration = registration
        self.provider = _Provider(registration.issuer)
        self.visits = _Visits()

    def _client(self) -> AsyncOAuth2Client:
        """Authlib's client, one per login: it keeps the token it fetched."""
        reg = self.registration
        return AsyncOAuth2Client(
            client_id=reg.client_id,
            client_secret=reg.client_secret,
            token_endpoint_auth_method="client_secret_basic",  # noqa: S106 (a method)
            scope=SCOPE,
            redirect_uri=reg.redirect_uri,
            code_challenge_method="S256",
        )

    async def home(self, request: web.Request) -> web.Response:
        patron = self.visits.patron(request.cookies.get(SESSION_COOKIE))
        return _page("Welcome", patron=patron)

    async def login(self, request: web.Request) -> web.StreamResponse:
        try:
            metadata = await self.provider.metadata()
        except LoginFailed as exc:
            return _page("Logging in is not possible now", message=str(exc), status=502)
        login = _Login(
            state=secrets.token_urlsafe(24),
            nonce=secrets.token_urlsafe(24),
            code_verifier=secrets.token_urlsafe(48),
        )
        async with self._client() as client:
            url, _ = client.create_authorization_url(
                metadata["authorization_endpoint"],
                state=login.state,
                code_verifier=login.code_verifier,
                nonce=login.nonce,
            )
        resp = _redirect(url)
        _set_cookie(resp, LOGIN_COOKIE, self.visits.start_login(login), max_age=LOGIN_TTL)
        return resp

    async def callback(self, request: web.Request) -> web.StreamResponse:
        login = self.visits.finish_login(request.cookies.get(LOGIN_COOKIE))
        try:
            claims = await self._logged_in(request, login)
        except LoginFailed as exc:
            resp = _page("You are not logged in", message=str(exc), status=400)
            resp.del_cookie(LOGIN_COOKIE, path="/")
            return resp
        resp = _redirect("/")
        resp.del_cookie(LOGIN_COOKIE, path="/")
        # A new session value at every login: one planted before it is worth nothing.
        _set_cookie(resp, SESSION_COOKIE, self.visits.log_in(claims))
        return resp

    async def _logged_in(self, request: web.Request, login: _Login | None) -> dict[str, Any]:
        query = request.query
        if login is None:
            raise LoginFailed("This login was not started here, or it took too long.")
        if query.get("state") != login.state:
            raise LoginFailed("This answer belongs to another login.")
        # RFC 9207: the answer names the provider that sent it; only ours may log anyone in.
        if query.get("iss") != self.registration.issuer:
            raise LoginFailed("This answer did not come from the library's login service.")
        if "error" in query:
            reason = query.get("error_description") or query["error"]
            raise LoginFailed(f"The library did not log you in: {reason}.")
        metadata = await self.provider.metadata()
        try:
            async with self._client() as client:
                token = await client.fetch_token(
                    metadata["token_endpoint"],
                    authorization_response=str(request.rel_url),
                    state=login.state,
                    code_verifier=login.code_verifier,
                )
        except (AuthlibBaseError, httpx2.HTTPError) as exc:
            raise LoginFailed(f"The login could not be completed ({exc}).") from exc
        return await self._verified_id_token(token, login.nonce)

    async def _decoded(self, token: str) -> jwt.Token:
        """`token` with its signature checked against the provider's keys, by `kid`, with the
        algorithm the site registered (never `none`)."""
        try:
            return jwt.decode(token, await self.provider.keys(), algorithms=ID_TOKEN_ALGORITHMS)
        except InvalidKeyIdError:
            # A key we have not seen yet: the provider rotated; fetch the set once more.
            return jwt.decode(
                token, await self.provider.keys(fresh=True), algorithms=ID_TOKEN_ALGORITHMS
            )

    async def _verified_id_token(self, token: dict[str, Any], nonce: str) -> dict[str, Any]:
        reg = self.registration
        if not isinstance(token.get("id_token"), str):
            raise LoginFailed("The login service sent no ID token.")
        try:
            decoded = await self._decoded(token["id_token"])
            claims = CodeIDToken(
                decoded.claims,
                decoded.header,
                {
                    "iss": {"essential": True, "value": reg.issuer},
                    "aud": {"essential": True, "value": reg.client_id},
                },
                {"nonce": nonce, "client_id": reg.client_id, "access_token": token["access_token"]},
            )
            claims.validate(leeway=LEEWAY)
        except JoseError as exc:
            raise LoginFailed(f"The ID token did not verify ({exc}).") from exc
        return dict(claims)

    async def logout(self, request: web.Request) -> web.StreamResponse:
        """Local logout: this site forgets the patron; the gateway's session stays."""
        self.visits.log_out(request.cookies.get(SESSION_COOKIE))
        resp = _redirect("/", status=303)
        resp.del_cookie(SESSION_COOKIE, path="/")
        return resp

    async def backchannel_logout(self, request: web.Request) -> web.Response:
        """OpenID Connect Back-Channel Logout 1.0: the gateway says a session of its own
        ended (a logout there, a password change, the helpdesk ending it); every session of
        this site started in it ends too. 200 once done (also when none was left: the
        gateway may say it twice), 400 for anything that is not a valid logout token."""
        form = await request.post()
        token = form.get("logout_token")
        try:
            if not isinstance(token, str) or not token:
                raise LogoutRefused("the request carries no logout_token")
            claims = await self._verified_logout_token(token)
        except LogoutRefused as exc:
            error = {"error": "invalid_request", "error_description": str(exc)}
            return web.json_response(error, status=400, headers=_NO_STORE)
        except LoginFailed as exc:  # the provider's keys could not be fetched
            error = {"error": "temporarily_unavailable", "error_description": str(exc)}
            return web.json_response(error, status=503, headers=_NO_STORE)
        self.visits.end_sessions(sid=claims.get("sid"), sub=claims.get("sub"))
        return web.Response(status=200, headers=_NO_STORE)

    async def _verified_logout_token(self, token: str) -> dict[str, Any]:
        """The claims of a logout token the provider signed for this site (Back-Channel
        Logout 1.0, 2.6), or LogoutRefused saying why not."""
        reg = self.registration
        try:
            decoded = await self._decoded(token)
            typ = decoded.header.get("typ")
            if not isinstance(typ, str) or typ.lower() not in LOGOUT_TOKEN_TYPES:
                raise LogoutRefused("not a logout token (typ)")
            jwt.JWTClaimsRegistry(
                leeway=LEEWAY,
                iss={"essential": True, "value": reg.issuer},
                aud={"essential": True, "value": reg.client_id},
                iat={"essential": True},
                exp={"essential": True},
                jti={"essential": True},
            ).validate(decoded.claims)
        except (JoseError, ValueError) as exc:
            raise LogoutRefused(f"the logout token did not verify ({exc})") from exc
        claims = decoded.claims
        events = claims.get("events")
        if not isinstance(events, dict) or not isinstance(events.get(LOGOUT_EVENT), dict):
            raise LogoutRefused("not a logout token (events)")
        if "nonce" in claims:  # an ID token (2.4: a logout token never has one)
            raise LogoutRefused("not a logout token (nonce)")
        sid, sub = claims.get("sid"), claims.get("sub")
        if sid is None and sub is None:
            raise LogoutRefused("the logout token names neither a session nor a patron")
        if not all(value is None or (isinstance(value, str) and value) for value in (sid, sub)):
            raise LogoutRefused("the logout token's sid or sub is not a string")
        return claims


_NO_STORE = {"Cache-Control": "no-store"}


def _redirect(location: str, status: int = 302) -> web.Response:
    return web.Response(status=status, headers={"Location": location})


def _set_cookie(resp: web.StreamResponse, name: str, value: str, **kwargs: Any) -> None:
    # Secure too on a real site, served over https; the demo is plain http on loopback.
    resp.set_cookie(name, value, path="/", httponly=True, samesite="Lax", **kwargs)


_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("gateway.demo", "."),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def _shown(claims: dict[str, Any]) -> list[tuple[str, str]]:
    shown = []
    for name in _SHOWN_CLAIMS:
        if name not in claims:
            continue
        value = claims[name]
        if name in _TIMES and isinstance(value, int):
            value = datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        shown.append((name, str(value)))
    return shown


def _page(
    title: str,
    *,
    patron: dict[str, Any] | None = None,
    message: str | None = None,
    status: int = 200,
) -> web.Response:
    html = _TEMPLATES.get_template("public_library.html").render(
        name=NAME,
        colour=HOUSE_COLOUR,
        text_colour=TEXT_COLOUR,
        title=title,
        patron=patron,
        claims=_shown(patron) if patron else [],
        message=message,
    )
    return web.Response(text=html, content_type="text/html", status=status)


def public_library_app(registration: Registration) -> web.Application:
    """The site: `/`, `/login`, `/callback` (its registered redirect URI), `/logout` and
    `/logout/backchannel` (its registered back-channel logout URI)."""
    site = _Site(registration)

    async def http_client(_app: web.Application) -> AsyncIterator[None]:
        async with httpx2.AsyncClient() as client:
            site.provider.http = client
            yield
            site.provider.http = None

    app = web.Application()
    app.cleanup_ctx.append(http_client)
    app.router.add_get("/", site.home)
    app.router.add_get("/login", site.login)
    app.router.add_get(CALLBACK_PATH, site.callback)
    app.router.add_post("/logout", site.logout)
    app.router.add_post(BACKCHANNEL_LOGOUT_PATH, site.backchannel_logout)
    return app


def listening_socket(host: str = HOST) -> socket.socket:
    """A socket bound to a free port on `host`, for `web.SockSite`: the port is known before
    the site starts, so its redirect URI can be registered with the gateway first."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
    except OSError:
        sock.close()
        raise
    return sock
