"""The signing keys, the JWKS, and the signed identity for backends with its per-session cache.

Keys live in PostgreSQL so every instance signs with the same keys and publishes the same set;
private keys are stored encrypted with the cookie keys. Each purpose keeps one active key per
algorithm (`KEYS`): the identity JWT for backends its Ed25519 key, the OpenID Connect provider
one RSA, one P-256 and one Ed25519 key. Retired keys stay published until pruned, so tokens
signed just before a rotation still verify. A key of one purpose never verifies a token of
another (auth/oidc/tokens.py looks keys up by purpose), and every kind of token has its own
`typ`, so an identity header, an ID token, an access token and a logout token cannot pass for
one another.

Signing costs far more than a dictionary lookup, so an identity token is made once per
session, route and username and reused until a minute before it expires (tokens live five
minutes).
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import asyncpg
import jwt
from cryptography.fernet import InvalidToken, MultiFernet

from auth import keys
from auth.identity import Identity
from auth.keys import PrivateKey

log = logging.getLogger("auth.tokens")

IDENTITY = "identity"
OIDC = "oidc"
# Every key kept active: (purpose, algorithm). The identity JWT's key comes first, so the
# first line `keys rotate` prints names it.
KEYS: tuple[tuple[str, str], ...] = (
    (IDENTITY, "EdDSA"),
    (OIDC, "RS256"),
    (OIDC, "ES256"),
    (OIDC, "EdDSA"),
)
KEYS_CHANNEL = "library_gateway_keys"  # NOTIFY: the keys changed, every instance re-reads

ALGORITHM = "EdDSA"
IDENTITY_TYPE = "library-identity+jwt"
TOKEN_TTL = 300
_REUSE_FOR = TOKEN_TTL - 60
_KEY_LOCK = 0x6C6962676B6579  # advisory lock for creating and rotating keys


class SigningUnavailable(Exception):
    """No active signing key can be decrypted with this instance's cookie keys."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: PrivateKey
    algorithm: str = ALGORITHM


@dataclass(frozen=True)
class PublishedKey:
    """A key of the JWKS, active or retired, as a verifier uses it."""

    kid: str
    purpose: str
    algorithm: str
    jwk: jwt.PyJWK


def _new_key(fernet: MultiFernet, algorithm: str) -> tuple[str, bytes, str]:
    private = keys.generate(algorithm)
    kid = time.strftime("%Y%m%d") + "-" + secrets.token_hex(4)
    jwk = keys.public_jwk(private, kid, algorithm)
    return kid, fernet.encrypt(keys.private_pem(private)), json.dumps(jwk)


class KeyStore:
    def __init__(self, pool: asyncpg.Pool, fernet: MultiFernet) -> None:
        self._pool = pool
        self._fernet = fernet
        self.active: SigningKey | None = None  # the identity JWT's key
        self._active: dict[tuple[str, str], SigningKey] = {}
        self._published: dict[str, PublishedKey] = {}
        self.jwks_body = b'{"keys": []}'

    def oidc_key(self, alg: str) -> SigningKey | None:
        """The OpenID Connect provider's active key for `alg`, if this instance can use it."""
        return self._active.get((OIDC, alg))

    def published_key(self, kid: str, purpose: str) -> PublishedKey | None:
        """The published key `kid`, if it is one of `purpose`'s keys."""
        key = self._published.get(kid)
        return key if key is not None and key.purpose == purpose else None

    async def load(self) -> None:
        """Make sure every key of `KEYS` exists and is usable, then read the keys.

        An active key that none of the cookie keys can decrypt (the cookie keys were replaced
        rather than rotated) is retired, still published, and a new one takes its place.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _KEY_LOCK)
            rows = await conn.fetch(
                "SELECT purpose, algorithm, private_key FROM signing_keys WHERE active"
            )
            active = {(row["purpose"], row["algorithm"]): bytes(row["private_key"]) for row in rows}
            made = []
            for purpose, algorithm in KEYS:
                encrypted = active.get((purpose, algorithm))
                if encrypted is not None and self._readable(encrypted):
                    continue
                if encrypted is not None:
                    log.warning(
                        "the active signing key cannot be decrypted with the current "
                        "cookie keys; starting a new one",
                        extra={"purpose": purpose, "algorithm": algorithm},
                    )
                made.append(await self._insert(conn, purpose, algorithm))
            if made:
                await conn.execute("SELECT pg_notify($1, $2)", KEYS_CHANNEL, ",".join(made))
        await self.refresh()

    def _readable(self, encrypted: bytes) -> bool:
        try:
            self._fernet.decrypt(encrypted)
        except InvalidToken:
            return False
        return True

    async def _insert(self, conn: Any, purpose: str, algorithm: str) -> str:
        kid, encrypted, jwk = _new_key(self._fernet, algorithm)
        await conn.execute(
            "UPDATE signing_keys SET active = false, retired_at = now()"
            " WHERE active AND purpose = $1 AND algorithm = $2",
            purpose,
            algorithm,
        )
        await conn.execute(
            "INSERT INTO signing_keys (kid, purpose, algorithm, private_key, public_jwk, active)"
            " VALUES ($1, $2, $3, $4, $5::jsonb, true)",
            kid,
            purpose,
            algorithm,
            encrypted,
            jwk,
        )
        return kid

    async def refresh(self) -> None:
        rows = await self._pool.fetch(
            "SELECT kid, purpose, algorithm, private_key, public_jwk::text AS jwk, active"
            " FROM signing_keys"
            " ORDER BY purpose = 'identity' DESC, created_at DESC, algorithm DESC, kid"
        )
        published = []
        verifiers: dict[str, PublishedKey] = {}
        active: dict[tuple[str, str], SigningKey] = {}
        unreadable = []
        for row in rows:
            purpose, algorithm = row["purpose"], row["algorithm"]
            jwk = keys.published(json.loads(row["jwk"]))
            try:
                verifier = jwt.PyJWK(jwk)
            except jwt.PyJWTError:
                log.error("a stored public key is not a usable JWK", extra={"kid": row["kid"]})
                continue
            published.append(jwk)
            verifiers[row["kid"]] = PublishedKey(row["kid"], purpose, algorithm, verifier)
            if not row["active"]:
                continue
            try:
                pem = self._fernet.decrypt(bytes(row["private_key"]))
                private = keys.load_private(pem, algorithm)
            except (InvalidToken, ValueError):
                unreadable.append(f"{purpose} {algorithm}")
                continue
            active[purpose, algorithm] = SigningKey(row["kid"], private, algorithm)
        if unreadable:
            log.error(
                "no active signing key can be decrypted with this instance's cookie keys"
                f" ({', '.join(unreadable)}); check GATEWAY_COOKIE_KEYS (nothing can be"
                " signed with those keys until then)"
            )
        self._active = active
        self._published = verifiers
        self.active = active.get((IDENTITY, ALGORITHM))
        self.jwks_body = json.dumps({"keys": published}).encode()

    async def rotate(self, purpose: str | None = None) -> dict[tuple[str, str], str]:
        """Make a new active key for every key of `KEYS` (or of `purpose` only); the old ones
        stay published until `prune`. Returns the new kids by (purpose, algorithm)."""
        chosen = [key for key in KEYS if purpose is None or key[0] == purpose]
        if not chosen:
            raise ValueError(f"no signing keys for purpose {purpose!r}")
        made = {}
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _KEY_LOCK)
            for key in chosen:
                made[key] = await self._insert(conn, *key)
            await conn.execute("SELECT pg_notify($1, $2)", KEYS_CHANNEL, ",".join(made.values()))
        await self.refresh()
        return made

    async def prune(self, older_than: float = 3600.0) -> list[str]:
        """Unpublish keys, of every purpose, retired more than `older_than` seconds ago."""
        rows = await self._pool.fetch(
            "DELETE FROM signing_keys WHERE NOT active"
            " AND retired_at < now() - make_interval(secs => $1) RETURNING kid",
            older_than,
        )
        if rows:
            await self._pool.execute("SELECT pg_notify($1, 'pruned')", KEYS_CHANNEL)
        await self.refresh()
        return [row["kid"] for row in rows]

    async def reencrypt(self) -> int:
        """Re-encrypt every stored private key with the first cookie key (after its rotation)."""
        rows = await self._pool.fetch("SELECT kid, private_key FROM signing_keys")
        for row in rows:
            await self._pool.execute(
                "UPDATE signing_keys SET private_key = $2 WHERE kid = $1",
                row["kid"],
                self._fernet.rotate(bytes(row["private_key"])),
            )
        return len(rows)


class IdentitySigner:
    def __init__(self, keys: KeyStore, issuer: str, *, max_entries: int = 50_000) -> None:
        self._keys = keys
        self._issuer = issuer
        self._max = max_entries
        self._cache: OrderedDict[tuple[object, ...], tuple[str, float]] = OrderedDict()

    def token(self, identity: Identity, audience: str, now: float | None = None) -> str:
        key = self._keys.active
        if key is None:
            # Fail closed: no identity leaves the gateway unsigned.
            raise SigningUnavailable("no signing key this instance can use")
        now = time.time() if now is None else now
        # The memberships too: one added or ended shows in the next token, not minutes later.
        cache_key = (identity.session, audience, identity.username, key.kid, identity.memberships)
        cached = self._cache.get(cache_key)
        if cached is not None and now - cached[1] < _REUSE_FOR:
            return cached[0]
        issued = int(now)
        claims = {
            "iss": self._issuer,
            "sub": identity.user_id,
            "aud": audience,
            "iat": issued,
            "nbf": issued - 5,
            "exp": issued + TOKEN_TTL,
            "preferred_username": identity.username,
            "pass_number": identity.pass_number,
            "sid": identity.session[:32],
            "memberships": [membership.claim for membership in identity.memberships],
        }
        # Its own `typ`: no verifier of ID or access tokens takes it for one of theirs.
        token = jwt.encode(
            claims,
            key.private,
            algorithm=ALGORITHM,
            headers={"typ": IDENTITY_TYPE, "kid": key.kid},
        )
        self._cache[cache_key] = (token, float(issued))
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return token
