"""The token endpoint, UserInfo and discovery: what a connected library's server calls.

Every answer of the token endpoint is JSON with `Cache-Control: no-store` (RFC 6749 5.1);
errors carry `error` and `error_description`, a failed client authentication is 401
`invalid_client` with a `WWW-Authenticate` challenge. Client secrets are compared in constant
time (`ClientSecret.matches`).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import uuid
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web

from auth import urls
from auth.audit import SYSTEM, Event, origin_of
from auth.oidc.clients import SCOPES, Client
from auth.oidc.grants import Purchase, RefreshRefused, RefreshReused, Spent
from auth.oidc.provider import ACCESS_TOKEN_TTL, ID_TOKEN_TTL, PROVIDER, Provider
from auth.oidc.requests import claims_for, pkce_matches
from auth.services import SERVICES

log = logging.getLogger("auth.oidc")

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_FORM = 16 * 1024
# The fields the token, revocation and introspection endpoints read.
_FIELDS = frozenset(
    {
        "grant_type",
        "code",
        "redirect_uri",
        "code_verifier",
        "refresh_token",
        "scope",
        "client_id",
        "client_secret",
        "token",
        "token_type_hint",
    }
)


class TokenError(Exception):
    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _json(payload: dict[str, Any], status: int = 200, **headers: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(payload),
        content_type="application/json",
        headers={**_NO_STORE, **headers},
    )


async def token(request: web.Request) -> web.Response:
    provider = request.app[PROVIDER]
    try:
        form = await _form(request)
        client = _authenticate(request, form, provider)
        grant = form.get("grant_type")
        if not grant:
            raise TokenError("invalid_request", "grant_type is required")
        if grant == "authorization_code":
            return _json(await _exchange_code(request, form, client, provider))
        if grant == "refresh_token":
            return _json(await _refresh(request, form, client, provider))
        raise TokenError(
            "unsupported_grant_type", "authorization_code and refresh_token are served here"
        )
    except TokenError as exc:
        return _token_error(exc)


def _token_error(exc: TokenError) -> web.Response:
    headers = (
        {"WWW-Authenticate": 'Basic realm="library", charset="UTF-8"'} if exc.status == 401 else {}
    )
    return _json({"error": exc.error, "error_description": exc.description}, exc.status, **headers)


async def _form(request: web.Request) -> dict[str, str]:
    if request.content_type != "application/x-www-form-urlencoded":
        raise TokenError("invalid_request", "the body must be application/x-www-form-urlencoded")
    if request.content_length is not None and request.content_length > MAX_FORM:
        raise TokenError("invalid_request", "the body is too large")
    try:
        posted = await request.post()
    except ValueError:  # not UTF-8 (UnicodeDecodeError)
        raise TokenError("invalid_request", "the body is not a readable form") from None
    form: dict[str, str] = {}
    for key in posted:
        values = posted.getall(key)
        if len(values) != 1 or not isinstance(values[0], str):
            # Named only when it is one of ours: a name is the sender's choice, never echoed.
            name = key if key in _FIELDS else "a parameter"
            raise TokenError("invalid_request", f"{name} must be given once")
        form[key] = values[0]
    return form


def _authenticate(request: web.Request, form: dict[str, str], provider: Provider) -> Client:
    """client_secret_basic, client_secret_post, or `none` for a public client (RFC 6749
    2.3.1); more than one method at once is refused (2.3)."""
    header = request.headers.get("Authorization")
    client_id: str | None
    secret: str | None
    if header is not None:
        if "client_secret" in form:
            raise TokenError("invalid_request", "use one client authentication method")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            raise TokenError("invalid_client", "unsupported client authentication", 401)
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise TokenError("invalid_client", "malformed client credentials", 401) from None
        raw_id, sep, raw_secret = decoded.partition(":")
        if not sep:
            raise TokenError("invalid_client", "malformed client credentials", 401)
        # Each part was form-encoded before Basic (RFC 6749 2.3.1), so `+` is a space.
        client_id, secret = unquote_plus(raw_id), unquote_plus(raw_secret)
        if "client_id" in form and form["client_id"] != client_id:
            raise TokenError("invalid_request", "client_id does not match the credentials")
    else:
        client_id, secret = form.get("client_id"), form.get("client_secret")
    client = provider.clients.table.get(client_id or "")
    if client is None:
        raise TokenError("invalid_client", "unknown client", 401)
    if client.secret is None:
        if secret is not None:
            raise TokenError("invalid_client", "a public client has no secret", 401)
        return client
    if secret is None or not client.secret.matches(secret):
        raise TokenError("invalid_client", "client authentication failed", 401)
    return client


async def _exchange_code(
    request: web.Request, form: dict[str, str], client: Client, provider: Provider
) -> dict[str, Any]:
    code = form.get("code")
    if not code:
        raise TokenError("invalid_request", "code is required")
    redirect_uri = form.get("redirect_uri", "")
    purchase = Purchase(
        jti=secrets.token_urlsafe(16),
        access_ttl=ACCESS_TOKEN_TTL,
        client_id=client.client_id,
        redirect_uri=redirect_uri,
        refresh_token=secrets.token_urlsafe(32),
        family=str(uuid.uuid4()),
    )
    try:
        grant = await provider.grants.spend_code(code, purchase)
    except Spent:
        raise TokenError("invalid_grant", "the code is invalid, expired or used") from None
    if grant.client_id != client.client_id:
        raise TokenError("invalid_grant", "the code was issued to another client")
    if redirect_uri != grant.redirect_uri:
        raise TokenError("invalid_grant", "redirect_uri does not match the authorization")
    if not pkce_matches(form.get("code_verifier"), grant.code_challenge) or not grant.live:
        await provider.grants.revoke_family(purchase.family)  # recorded, never issued
        if not grant.live:
            raise TokenError("invalid_grant", "the patron's session has ended")
        raise TokenError("invalid_grant", "PKCE verification failed")
    return _tokens(
        provider,
        client,
        account_id=grant.account_id,
        session=grant.session,
        scope=grant.scope,
        jti=purchase.jti,
        auth_time=grant.auth_time,
        nonce=grant.nonce,
        claims=dict(
            username=grant.username,
            email=grant.email,
            pass_number=grant.pass_number,
            memberships=grant.memberships,
        ),
        refresh_token=purchase.refresh_token,
    )


def _tokens(
    provider: Provider,
    client: Client,
    *,
    account_id: str,
    session: str,
    scope: str,
    jti: str,
    auth_time: int,
    nonce: str | None,
    claims: dict[str, Any],
    refresh_token: str,
) -> dict[str, Any]:
    """The token endpoint's answer: an access token, the next refresh token and, for an
    `openid` grant, an ID token (on a refresh too, without a nonce: OIDC Core 12.2)."""
    sub = provider.subject(client, account_id)
    sid = session[:32]
    access_token = provider.signer.access_token(
        client_id=client.client_id,
        sub=sub,
        scope=scope,
        sid=sid,
        jti=jti,
        ttl=ACCESS_TOKEN_TTL,
        auth_time=auth_time,
    )
    scopes = scope.split()
    answer: dict[str, Any] = {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": ACCESS_TOKEN_TTL,
        "refresh_token": refresh_token,
        "scope": scope,
    }
    if "openid" in scopes:
        answer["id_token"] = provider.signer.id_token(
            client_id=client.client_id,
            sub=sub,
            alg=client.id_token_signed_response_alg,
            nonce=nonce,
            auth_time=auth_time,
            sid=sid,
            claims=claims_for(scopes, **claims),
            access_token=access_token,
            ttl=ID_TOKEN_TTL,
        )
    return answer


async def _refresh(
    request: web.Request, form: dict[str, str], client: Client, provider: Provider
) -> dict[str, Any]:
    """RFC 6749 6: the refresh token is spent and the next one issued (rotation); a spent one
    presented again ends the grant for every holder (OAuth 2.0 Security BCP 4.14.2)."""
    presented = form.get("refresh_token")
    if not presented:
        raise TokenError("invalid_request", "refresh_token is required")
    scope = frozenset(form["scope"].split()) if form.get("scope") else None
    next_token = secrets.token_urlsafe(32)
    jti = secrets.token_urlsafe(16)
    try:
        grant = await provider.grants.refresh(
            presented,
            client_id=client.client_id,
            scope=scope,
            next_token=next_token,
            jti=jti,
            access_ttl=ACCESS_TOKEN_TTL,
        )
    except RefreshReused as exc:
        log.warning(
            "a used refresh token was presented again; its grant is revoked",
            extra={
                "event": "refresh_token_reuse",
                "client_id": exc.client_id,
                "account_id": exc.account_id,
            },
        )
        # On the patron's trail: a stolen refresh token shows itself this way.
        await request.app[SERVICES].audit.record(
            Event(
                "refresh_token_reuse",
                SYSTEM,
                origin_of(request),
                account_id=exc.account_id,
                details={"client_id": exc.client_id},
            )
        )
        raise TokenError("invalid_grant", exc.reason) from None
    except RefreshRefused as exc:
        raise TokenError(exc.error, exc.reason) from None
    return _tokens(
        provider,
        client,
        account_id=grant.account_id,
        session=grant.session,
        scope=grant.scope,
        jti=jti,
        auth_time=grant.auth_time,
        nonce=None,
        claims=dict(
            username=grant.username,
            email=grant.email,
            pass_number=grant.pass_number,
            memberships=grant.memberships,
        ),
        refresh_token=next_token,
    )


async def revoke(request: web.Request) -> web.Response:
    """RFC 7009. The client authenticates as at the token endpoint; a refresh token ends its
    whole grant, an access token itself. The answer is 200 whether or not the token was one
    of this client's (2.2), so it tells nothing about other clients' tokens."""
    provider = request.app[PROVIDER]
    try:
        form = await _form(request)
        client = _authenticate(request, form, provider)
        token = form.get("token")
        if not token:
            raise TokenError("invalid_request", "token is required")
    except TokenError as exc:
        return _token_error(exc)
    # The hint only orders a search (RFC 7009 2.1), so a wrong one never makes the
    # revocation a no-op: a refresh token sent as an `access_token` still ends its grant.
    if not await provider.grants.revoke_refresh(token, client.client_id):
        claims = provider.signer.verify_access_token(token)
        jti = claims.get("jti") if claims is not None else None
        if isinstance(jti, str):
            await provider.grants.revoke_access(jti, client.client_id)
    return web.Response(status=200, headers=_NO_STORE)


async def introspect(request: web.Request) -> web.Response:
    """RFC 7662 for a connected library's resource server, which authenticates as its client
    (a public client cannot: 2.1). A token is active only for the client it was issued to;
    for any other, and for anything revoked, expired, of a disabled account or of a session
    that has ended, the answer is `{"active": false}` and nothing more."""
    provider = request.app[PROVIDER]
    try:
        form = await _form(request)
        client = _authenticate(request, form, provider)
        if client.secret is None:
            raise TokenError("invalid_client", "a public client cannot introspect", 401)
        token = form.get("token")
        if not token:
            raise TokenError("invalid_request", "token is required")
    except TokenError as exc:
        return _token_error(exc)
    inactive = _json({"active": False})
    claims = provider.signer.verify_access_token(token)
    if claims is not None:
        jti = claims.get("jti")
        live = await provider.grants.live_token(jti) if isinstance(jti, str) else None
        if live is None or claims.get("client_id") != client.client_id:
            return inactive
        account = await request.app[SERVICES].accounts.by_id(live[0])
        answer: dict[str, Any] = {
            "active": True,
            "token_type": "Bearer",
            **{
                k: claims[k]
                for k in (
                    "scope",
                    "client_id",
                    "sub",
                    "aud",
                    "iss",
                    "exp",
                    "iat",
                    "jti",
                    "sid",
                    "auth_time",
                )
                if k in claims
            },
        }
        if account is not None and "profile" in str(claims.get("scope", "")).split():
            answer["username"] = account.username
        return _json(answer)
    state = await provider.grants.refresh_state(token)
    if state is None or state.client_id != client.client_id:
        return inactive
    answer = {
        "active": True,
        "scope": state.scope,
        "client_id": state.client_id,
        "sub": provider.subject(client, state.account_id),
        "iss": provider.issuer,
        "exp": state.expires_at,
        "iat": state.issued_at,
        "sid": state.session[:32],
    }
    if "profile" in state.scope.split():
        answer["username"] = state.username
    return _json(answer)


async def userinfo(request: web.Request) -> web.Response:
    """OIDC Core 5.3: the claims of the patron an access token was issued for, by scope."""
    provider = request.app[PROVIDER]
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return _bearer_error(None)
    claims = provider.signer.verify_access_token(presented.strip())
    jti = claims.get("jti") if claims is not None else None
    live = await provider.grants.live_token(jti) if isinstance(jti, str) else None
    if claims is None or live is None:
        return _bearer_error("invalid_token")
    account_id, scope = live
    if "openid" not in scope.split():
        # Narrowed on a refresh to no `openid`: not a token of an OpenID Connect grant.
        return _bearer_error("insufficient_scope", 403)
    client = provider.clients.table.get(str(claims.get("client_id", "")))
    account = await request.app[SERVICES].accounts.by_id(account_id)
    if client is None or account is None:
        return _bearer_error("invalid_token")
    payload: dict[str, Any] = {"sub": provider.subject(client, account.id)}
    payload.update(
        claims_for(
            scope.split(),
            username=account.username,
            email=account.email,
            pass_number=account.pass_number,
            memberships=(
                await provider.memberships.of(account.id)
                if provider.memberships is not None and "library" in scope.split()
                else ()
            ),
        )
    )
    return _json(payload)


def _bearer_error(error: str | None, status: int = 401) -> web.Response:
    challenge = 'Bearer realm="library"' + (f', error="{error}"' if error else "")
    return _json({"error": error or "invalid_request"}, status, **{"WWW-Authenticate": challenge})


async def discovery(request: web.Request) -> web.Response:
    """OpenID Connect Discovery 1.0: every endpoint is named here and nowhere else."""
    provider = request.app[PROVIDER]
    issuer = provider.issuer
    document = {
        "issuer": issuer,
        "authorization_endpoint": issuer + urls.OIDC_AUTHORIZE,
        "token_endpoint": issuer + urls.OIDC_TOKEN,
        "userinfo_endpoint": issuer + urls.OIDC_USERINFO,
        "revocation_endpoint": issuer + urls.OIDC_REVOKE,
        "introspection_endpoint": issuer + urls.OIDC_INTROSPECT,
        "end_session_endpoint": issuer + urls.OIDC_LOGOUT,
        "jwks_uri": issuer + urls.JWKS,
        "scopes_supported": list(SCOPES),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public", "pairwise"],
        "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "code_challenge_methods_supported": ["S256"],
        "backchannel_logout_supported": True,
        "backchannel_logout_session_supported": True,
        "frontchannel_logout_supported": False,
        "claims_supported": [
            "sub",
            "iss",
            "aud",
            "exp",
            "iat",
            "auth_time",
            "nonce",
            "sid",
            "preferred_username",
            "email",
            "email_verified",
            "pass_number",
            "memberships",
        ],
        "prompt_values_supported": ["none", "login", "consent"],
        "ui_locales_supported": ["nl", "en"],
        "claims_parameter_supported": False,
        "request_parameter_supported": False,
        "request_uri_parameter_supported": False,
        "authorization_response_iss_parameter_supported": True,
    }
    return web.Response(
        text=json.dumps(document),
        content_type="application/json",
        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get(urls.OIDC_DISCOVERY, discovery)
    app.router.add_post(urls.OIDC_TOKEN, token)
    app.router.add_post(urls.OIDC_REVOKE, revoke)
    app.router.add_post(urls.OIDC_INTROSPECT, introspect)
    app.router.add_get(urls.OIDC_USERINFO, userinfo)
    app.router.add_post(urls.OIDC_USERINFO, userinfo)
