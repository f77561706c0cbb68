"""The provider's tokens: ID tokens, access tokens (RFC 9068) and back-channel logout tokens,
signed with the store's `oidc` keys, and the checks of the tokens the provider takes back.

Each kind has its own `typ` (`JWT`, `at+jwt`, `logout+jwt`; the identity header for backends
has `library-identity+jwt`), and a token is only taken back when its `typ` is the expected one
and its `kid` names one of our published `oidc` keys, verified with that key's own algorithm.
So an identity header, an ID token, an access token and a logout token never pass for one
another, and `alg: none`, an HMAC "signed" with a public key or a foreign key verify nothing.
Whatever is wrong with a token comes back as None: the caller treats its bearer as anonymous.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from auth.signing import OIDC, KeyStore, SigningUnavailable

# What a client may ask for with id_token_signed_response_alg (auth/oidc/clients.py: RS256
# unless it asks); its ID tokens and logout tokens are signed with that algorithm.
ID_TOKEN_ALGORITHMS = ("RS256", "ES256", "EdDSA")
# P-256: a fifth of an RSA-2048 signature's cost, and every JOSE library verifies it (RFC 9068
# leaves the algorithm to the server; the ID token keeps RS256 by default for the clients).
ACCESS_TOKEN_ALGORITHM = "ES256"  # noqa: S105 (an algorithm, not a password)
LOGOUT_TOKEN_TTL = 120
BACKCHANNEL_LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"

# The `typ` of each kind of token (media types, not secrets).
ID_TOKEN_TYPE = "JWT"  # noqa: S105
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105
LOGOUT_TOKEN_TYPE = "logout+jwt"  # noqa: S105

# at_hash and c_hash use the hash of the signature algorithm (OpenID Connect Core 3.1.3.6);
# for EdDSA over Ed25519 that is SHA-512 (OpenID Connect Token Hash Algorithms 1.0).
_TOKEN_HASHES: Mapping[str, Callable[[bytes], Any]] = {
    "RS256": hashlib.sha256,
    "ES256": hashlib.sha256,
    "EdDSA": hashlib.sha512,
}


def token_hash(value: str, alg: str) -> str:
    """An ID token's at_hash or c_hash of `value`: the left half of its hash, base64url."""
    digest = _TOKEN_HASHES[alg](value.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest[: len(digest) // 2]).rstrip(b"=").decode("ascii")


def _media_type(typ: object) -> str | None:
    """A `typ` as a comparable media type: case-insensitive, `application/` optional
    (RFC 7515 4.1.9)."""
    if not isinstance(typ, str):
        return None
    typ = typ.lower()
    return typ.removeprefix("application/")


class OidcSigner:
    def __init__(self, keys: KeyStore, issuer: str) -> None:
        self._keys = keys
        self._issuer = issuer

    def _sign(self, claims: dict[str, Any], alg: str, typ: str) -> str:
        if alg not in ID_TOKEN_ALGORITHMS:
            raise ValueError(f"the provider does not sign with {alg!r}")
        key = self._keys.oidc_key(alg)
        if key is None:
            # Fail closed: no token leaves the provider unsigned.
            raise SigningUnavailable(f"no {alg} key this instance can use")
        return jwt.encode(claims, key.private, algorithm=alg, headers={"typ": typ, "kid": key.kid})

    def id_token(
        self,
        *,
        client_id: str,
        sub: str,
        alg: str,
        nonce: str | None,
        auth_time: int,
        sid: str,
        claims: Mapping[str, object],
        access_token: str | None = None,
        code: str | None = None,
        ttl: int = 300,
    ) -> str:
        """An ID token for `client_id`; `claims` (those of the granted scopes) cannot
        override the protocol's own."""
        now = int(time.time())
        payload: dict[str, Any] = dict(claims)
        payload.update(
            {
                "iss": self._issuer,
                "sub": sub,
                "aud": client_id,
                "iat": now,
                "exp": now + ttl,
                "auth_time": auth_time,
                "sid": sid,
                "azp": client_id,
            }
        )
        for name in ("nonce", "at_hash", "c_hash"):
            payload.pop(name, None)
        if nonce is not None:
            payload["nonce"] = nonce
        if access_token is not None:
            payload["at_hash"] = token_hash(access_token, alg)
        if code is not None:
            payload["c_hash"] = token_hash(code, alg)
        return self._sign(payload, alg, ID_TOKEN_TYPE)

    def access_token(
        self,
        *,
        client_id: str,
        sub: str,
        scope: str,
        sid: str,
        jti: str,
        ttl: int = 300,
        auth_time: int,
    ) -> str:
        """An RFC 9068 access token; its audience is the client (the UserInfo endpoint takes
        any client's)."""
        now = int(time.time())
        payload = {
            "iss": self._issuer,
            "sub": sub,
            "aud": client_id,
            "client_id": client_id,
            "iat": now,
            "exp": now + ttl,
            "jti": jti,
            "scope": scope,
            "sid": sid,
            "auth_time": auth_time,
        }
        return self._sign(payload, ACCESS_TOKEN_ALGORITHM, ACCESS_TOKEN_TYPE)

    def logout_token(self, *, client_id: str, sub: str, sid: str, alg: str) -> str:
        """An OpenID Back-Channel Logout 1.0 logout token: never a nonce, always the event."""
        now = int(time.time())
        payload = {
            "iss": self._issuer,
            "aud": client_id,
            "iat": now,
            "exp": now + LOGOUT_TOKEN_TTL,
            "jti": secrets.token_urlsafe(16),
            "sid": sid,
            "sub": sub,
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}},
        }
        return self._sign(payload, alg, LOGOUT_TOKEN_TYPE)

    def verify_access_token(self, token: str) -> dict[str, Any] | None:
        """The claims of one of our live access tokens, or None for anything else."""
        return self._verify(
            token,
            typ=ACCESS_TOKEN_TYPE,
            require=("iss", "sub", "aud", "client_id", "iat", "exp", "jti", "scope"),
            verify_exp=True,
        )

    def verify_id_token_hint(
        self, token: str, *, allow_expired: bool = True
    ) -> dict[str, Any] | None:
        """The claims of an ID token we issued, or None. An expired one is taken by default:
        RP-initiated logout accepts an id_token_hint past its expiry. The caller checks `aud`
        against the client."""
        return self._verify(
            token,
            typ=ID_TOKEN_TYPE,
            require=("iss", "sub", "aud", "iat", "exp"),
            verify_exp=not allow_expired,
        )

    def _verify(
        self, token: str, *, typ: str, require: tuple[str, ...], verify_exp: bool
    ) -> dict[str, Any] | None:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        if _media_type(header.get("typ")) != typ.lower():
            return None
        kid = header.get("kid")
        key = self._keys.published_key(kid, OIDC) if isinstance(kid, str) else None
        # The key decides the algorithm, never the token: `none`, HS256 with our public key
        # as the secret, or another of our algorithms over this key all fail here.
        if key is None or header.get("alg") != key.algorithm:
            return None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.jwk,
                algorithms=[key.algorithm],
                issuer=self._issuer,
                options={
                    "require": list(require),
                    "verify_exp": verify_exp,
                    # The audience is a client; which clients may present it is the caller's
                    # question.
                    "verify_aud": False,
                },
            )
        except jwt.PyJWTError:
            return None
        return claims
