"""What an authorization request asks for, and whether it may be answered: pure decisions.

`read_authorization` turns the request's parameters into an `AuthorizationRequest`, or into
one of two refusals, as OpenID Connect Core 3.1.2.6 and RFC 6749 4.1.2.1 tell apart:

- `NotRedirectable`: an unknown client or a redirect URI it never registered (exact match
  only). Answered with the gateway's own error page: sending the browser anywhere would make
  the provider an open redirector.
- `ErrorRedirect`: every other mistake goes back to the client's (registered) redirect URI
  with `error`, `error_description`, `state` and `iss` (RFC 9207).

Only the authorization code flow is served; PKCE S256 is required of public clients and
accepted from confidential ones, and `plain` is refused (OAuth 2.0 Security BCP).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from auth.memberships import Membership
from auth.oidc.clients import SCOPES, Client, ClientTable

PROMPTS = frozenset({"none", "login", "consent"})
PARAMETERS = frozenset(
    {
        "response_type",
        "response_mode",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "nonce",
        "code_challenge",
        "code_challenge_method",
        "prompt",
        "max_age",
        "login_hint",
        "id_token_hint",
        "ui_locales",
        "request",
        "request_uri",
    }
)
"""The parameters an authorization request is read for."""
_CHALLENGE = re.compile(r"[A-Za-z0-9._~-]{43,128}")
_VERIFIER = _CHALLENGE
MAX_PARAMETER = 2048


@dataclass(frozen=True, slots=True)
class NotRedirectable:
    """Refused with the gateway's own page, never a redirect; `reason` is a page text key."""

    reason: str


@dataclass(frozen=True, slots=True)
class ErrorRedirect:
    """Refused back to the client."""

    redirect_uri: str
    error: str
    description: str
    state: str | None

    def location(self, issuer: str) -> str:
        return answer_location(
            self.redirect_uri,
            {"error": self.error, "error_description": self.description, "state": self.state},
            issuer,
        )


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    client: Client
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str | None
    nonce: str | None
    code_challenge: str | None
    prompt: frozenset[str]
    max_age: int | None
    login_hint: str | None
    ui_locales: tuple[str, ...]
    id_token_hint: str | None = None
    """As sent, not yet checked: `hinted_subject` reads it once verified."""

    @property
    def scope(self) -> str:
        return " ".join(self.scopes)

    def error(self, error: str, description: str) -> ErrorRedirect:
        return ErrorRedirect(self.redirect_uri, error, description, self.state)


def answer_location(redirect_uri: str, params: Mapping[str, str | None], issuer: str) -> str:
    """The redirect URI with the answer's parameters (and `iss`) added to its query."""
    query = urlencode({**{k: v for k, v in params.items() if v is not None}, "iss": issuer})
    return f"{redirect_uri}{'&' if '?' in redirect_uri else '?'}{query}"


def read_authorization(
    params: Mapping[str, str], clients: ClientTable, *, repeated: Collection[str] = ()
) -> AuthorizationRequest | NotRedirectable | ErrorRedirect:
    """`repeated` names the parameters the request gave more than once (`params` holds one
    of their values): RFC 6749 3.1 allows each once, and taking either copy would let
    whoever added the other choose. A repeated `client_id` or `redirect_uri` leaves nowhere
    to send the refusal; any other is `invalid_request`, and `state` is then not echoed."""
    if any(len(value) > MAX_PARAMETER for value in params.values()):
        return NotRedirectable("oidc.error.too_long")
    if "client_id" in repeated or "redirect_uri" in repeated:
        return NotRedirectable("oidc.error.malformed")
    client = clients.get(params.get("client_id", ""))
    if client is None:
        return NotRedirectable("oidc.error.unknown_client")
    redirect_uri = params.get("redirect_uri", "")
    if redirect_uri not in client.redirect_uris:
        return NotRedirectable("oidc.error.unknown_redirect")
    state = params.get("state") if "state" not in repeated else None

    def refuse(error: str, description: str) -> ErrorRedirect:
        return ErrorRedirect(redirect_uri, error, description, state)

    if repeated:
        # Named only when it is one of ours: a name is the sender's choice, never echoed.
        known = sorted(set(repeated) & PARAMETERS)
        return refuse("invalid_request", f"{known[0] if known else 'a parameter'} was given twice")
    if "request" in params:
        return refuse("request_not_supported", "request objects are not supported")
    if "request_uri" in params:
        return refuse("request_uri_not_supported", "request_uri is not supported")
    if not params.get("response_type"):
        return refuse("invalid_request", "response_type is required")
    if params["response_type"] != "code":
        return refuse("unsupported_response_type", "only response_type=code is served")
    if params.get("response_mode", "query") != "query":
        return refuse("invalid_request", "only response_mode=query is served")
    asked = params.get("scope", "").split()
    if "openid" not in asked:
        return refuse("invalid_scope", "the openid scope is required")
    # Scopes the client may not have, or nobody knows, are left out, not refused (as
    # node-oidc-provider does); the token's `scope` says what was granted.
    scopes = tuple(s for s in SCOPES if s in asked and s in client.scopes)
    challenge = params.get("code_challenge")
    method = params.get("code_challenge_method")
    if challenge is None:
        if method is not None:
            return refuse("invalid_request", "code_challenge_method without code_challenge")
        if client.public:
            return refuse("invalid_request", "PKCE (code_challenge, S256) is required")
    else:
        if method != "S256":
            return refuse("invalid_request", "code_challenge_method must be S256")
        if not _CHALLENGE.fullmatch(challenge):
            return refuse("invalid_request", "code_challenge is malformed")
    prompt = frozenset(params.get("prompt", "").split())
    if "none" in prompt and len(prompt) > 1:
        return refuse("invalid_request", "prompt=none cannot be combined with other values")
    max_age: int | None = None
    if "max_age" in params:
        try:
            max_age = int(params["max_age"])
        except ValueError:
            max_age = -1
        if max_age < 0:
            return refuse("invalid_request", "max_age must be a whole number of seconds")
    return AuthorizationRequest(
        client=client,
        redirect_uri=redirect_uri,
        scopes=scopes,
        state=state,
        nonce=params.get("nonce"),
        code_challenge=challenge,
        prompt=prompt & PROMPTS,
        max_age=max_age,
        login_hint=params.get("login_hint"),
        ui_locales=tuple(params.get("ui_locales", "").split()),
        # RFC 6749 3.1: a parameter without a value is as if it was not sent.
        id_token_hint=params.get("id_token_hint") or None,
    )


def needs_login(request: AuthorizationRequest, auth_time: int, now: int) -> bool:
    """Whether the patron must enter the password again even with a live session; max_age=0
    always (OIDC Core 3.1.2.1: it is prompt=login), also right after a login."""
    if request.max_age is None:
        return False
    return request.max_age == 0 or now - auth_time > request.max_age


def hinted_subject(claims: Mapping[str, object] | None, client: Client) -> str | None:
    """The `sub` an `id_token_hint` names, from its claims as verified (None: not an ID token
    of ours), when it was issued to `client`; None otherwise. The `sub` is in the client's
    own subject space (pairwise or not), as the client was given it."""
    if claims is None:
        return None
    audience = claims.get("aud")
    if isinstance(audience, list) and len(audience) == 1:
        audience = audience[0]
    sub = claims.get("sub")
    if audience != client.client_id or not isinstance(sub, str) or not sub:
        return None
    return sub


QUESTION_TTL = 3600
"""How long a consent page may wait for its answer, in seconds."""


def answerable(
    pending: Mapping[str, object], *, account_id: str, question: str, now: float
) -> bool:
    """Whether a consent page whose token names `question` may answer the question pending in
    the session: the same question, asked of this patron, less than QUESTION_TTL ago. (That it
    was not answered before is the database's to say.)"""
    asked_at = pending.get("asked_at")
    return (
        pending.get("uid") == account_id
        and pending.get("id") == question
        and isinstance(asked_at, int)
        and now <= asked_at + QUESTION_TTL
    )


def pkce_matches(verifier: str | None, challenge: str | None) -> bool:
    """RFC 7636 4.6 with S256; a code made without a challenge takes no verifier."""
    if challenge is None:
        return verifier is None
    if verifier is None or not _VERIFIER.fullmatch(verifier):
        return False
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    computed = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
    return hmac.compare_digest(computed, challenge)


def pairwise_subject(sector: str, account_id: str, secret: bytes) -> str:
    """A subject stable for one client host and different between hosts (OIDC Core 8.1)."""
    mac = hmac.new(secret, f"{sector}\x00{account_id}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")


def claims_for(
    scopes: tuple[str, ...] | list[str],
    *,
    username: str,
    email: str | None,
    pass_number: str,
    memberships: Sequence[Membership] = (),
) -> dict[str, object]:
    """The claims each granted scope releases (beyond `sub`)."""
    claims: dict[str, object] = {}
    if "profile" in scopes:
        claims["preferred_username"] = username
    if "email" in scopes and email:
        claims["email"] = email
        # Addresses come from the library's own registration, not checked by a mail loop.
        claims["email_verified"] = False
    if "library" in scopes:
        claims["pass_number"] = pass_number
        claims["memberships"] = [membership.claim for membership in memberships]
    return claims
