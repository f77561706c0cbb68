"""The signed identity for backends: Ed25519 keys, the JWKS, and a per-session token cache.

Keys live in PostgreSQL so every instance signs with the same key and publishes the same set;
private keys are stored encrypted with the cookie keys. One key is active (signs); retired keys
stay published until pruned, so tokens signed just before a rotation still verify.

Signing costs far more than a dictionary lookup, so a token is made once per session, route and
username and reused until a minute before it expires (tokens live five minutes).
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
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from auth.identity import Identity

log = logging.getLogger("auth.tokens")

ALGORITHM = "EdDSA"
TOKEN_TTL = 300
_REUSE_FOR = TOKEN_TTL - 60
_KEY_LOCK = 0x6C6962676B6579  # advisory lock for creating the first key


class SigningUnavailable(Exception):
    """No active signing key can be decrypted with this instance's cookie keys."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private: Ed25519PrivateKey


def _new_key(fernet: MultiFernet) -> tuple[str, bytes, str]:
    private = Ed25519PrivateKey.generate()
    kid = time.strftime("%Y%m%d") + "-" + secrets.token_hex(4)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    jwk = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    jwk.update({"kid": kid, "alg": ALGORITHM, "use": "sig"})
    return kid, fernet.encrypt(pem), json.dumps(jwk)


class KeyStore:
    def __init__(self, pool: asyncpg.Pool, fernet: MultiFernet) -> None:
        self._pool = pool
        self._fernet = fernet
        self.active: SigningKey | None = None
        self.jwks_body = b'{"keys": []}'

    async def load(self) -> None:
        """Make sure a usable key exists, then read the active key and the published set.

        An active key that none of the cookie keys can decrypt (the cookie keys were replaced
        rather than rotated) is retired, still published, and a new one takes its place.
        """
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _KEY_LOCK)
            active = await conn.fetchval("SELECT private_key FROM signing_keys WHERE active")
            if active is None or not self._readable(bytes(active)):
                if active is not None:
                    log.warning(
                        "the active signing key cannot be decrypted with the current "
                        "cookie keys; starting a new one"
                    )
                kid = await self._insert(conn)
                await conn.execute("SELECT pg_notify('library_gateway_keys', $1)", kid)
        await self.refresh()

    def _readable(self, encrypted: bytes) -> bool:
        try:
            self._fernet.decrypt(encrypted)
        except InvalidToken:
            return False
        return True

    async def _insert(self, conn: Any) -> str:
        kid, encrypted, jwk = _new_key(self._fernet)
        await conn.execute(
            "UPDATE signing_keys SET active = false, retired_at = now() WHERE active"
        )
        await conn.execute(
            "INSERT INTO signing_keys (kid, algorithm, private_key, public_jwk, active)"
            " VALUES ($1, $2, $3, $4::jsonb, true)",
            kid,
            ALGORITHM,
            encrypted,
            jwk,
        )
        return kid

    async def refresh(self) -> None:
        rows = await self._pool.fetch(
            "SELECT kid, private_key, public_jwk::text AS jwk, active FROM signing_keys"
            " ORDER BY created_at DESC"
        )
        published = []
        active: SigningKey | None = None
        for row in rows:
            published.append(json.loads(row["jwk"]))
            if row["active"] and self._readable(bytes(row["private_key"])):
                pem = self._fernet.decrypt(bytes(row["private_key"]))
                private = serialization.load_pem_private_key(pem, password=None)
                assert isinstance(private, Ed25519PrivateKey)
                active = SigningKey(row["kid"], private)
        if active is None and rows:
            log.error(
                "no active signing key can be decrypted with this instance's cookie keys;"
                " check GATEWAY_COOKIE_KEYS (identities cannot be signed until then)"
            )
        self.active = active
        self.jwks_body = json.dumps({"keys": published}).encode()

    async def rotate(self) -> str:
        """Make a new active key; the old one stays published until `prune`."""
        async with self._pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _KEY_LOCK)
            kid = await self._insert(conn)
            await conn.execute("SELECT pg_notify('library_gateway_keys', $1)", kid)
        await self.refresh()
        return kid

    async def prune(self, older_than: float = 3600.0) -> list[str]:
        """Unpublish keys retired more than `older_than` seconds ago."""
        rows = await self._pool.fetch(
            "DELETE FROM signing_keys WHERE NOT active"
            " AND retired_at < now() - make_interval(secs => $1) RETURNING kid",
            older_than,
        )
        if rows:
            await self._pool.execute("SELECT pg_notify('library_gateway_keys', 'pruned')")
        await self.refresh()
        return [row["kid"] for row in rows]

    async def reencrypt(self) -> int:
        """Re-encrypt stored private keys with the first cookie key (after its rotation)."""
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
        self._cache: OrderedDict[tuple[str, str, str, str], tuple[str, float]] = OrderedDict()

    def token(self, identity: Identity, audience: str, now: float | None = None) -> str:
        key = self._keys.active
        if key is None:
            # Fail closed: no identity leaves the gateway unsigned.
            raise SigningUnavailable("no signing key this instance can use")
        now = time.time() if now is None else now
        cache_key = (identity.session, audience, identity.username, key.kid)
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
        }
        token = jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})
        self._cache[cache_key] = (token, float(issued))
        while len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return token
