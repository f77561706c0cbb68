"""The provider's tables: authorization codes, the access tokens they produced, consents, and
the pairwise-subject secret. Every SQL statement on them is here.

A code is kept only as its SHA-256 (a database leak gives no usable code), is spent by one
atomic UPDATE (two racing exchanges cannot both win), and a second use revokes every token the
first one produced (RFC 6749 4.1.2: the code was stolen, so what it bought is suspect too).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import asyncpg

CODE_TTL = 60.0


def digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "replace")).digest()


@dataclass(frozen=True, slots=True)
class Code:
    """What a spent code was issued for, with the patron as the code's exchange needs them."""

    client_id: str
    account_id: str
    session: str
    redirect_uri: str
    scope: str
    nonce: str | None
    code_challenge: str | None
    auth_time: int
    username: str
    email: str | None
    pass_number: str
    live: bool
    """The patron's account is enabled and the gateway session the code came from lives."""


_SPEND = (
    "WITH spent AS ("
    " UPDATE oidc_codes SET used_at = now()"
    " WHERE code_hash = $1 AND used_at IS NULL AND expires_at > now()"
    " RETURNING client_id, account_id, session, redirect_uri, scope, nonce, code_challenge,"
    " auth_time)"
    " SELECT spent.client_id, spent.account_id::text AS account_id, spent.session,"
    " spent.redirect_uri, spent.scope, spent.nonce, spent.code_challenge,"
    " EXTRACT(EPOCH FROM spent.auth_time)::bigint AS auth_time,"
    " a.username, a.email, a.pass_number,"
    " NOT a.disabled AND EXISTS (SELECT 1 FROM sessions s"
    "   WHERE s.sid_hash = decode(spent.session, 'hex') AND s.revoked_at IS NULL"
    "   AND s.expires_at > now()) AS live"
    " FROM spent JOIN accounts a ON a.id = spent.account_id"
)
# The same, also recording the access token about to be issued (`jti`, for `ttl` seconds) when
# the code is presented by the client it was issued to, for its redirect URI: the exchange's
# writes in one round trip.
_SPEND_AND_RECORD = _SPEND.replace(
    " SELECT spent.client_id,",
    ", issued AS ("
    " INSERT INTO oidc_tokens (jti, code_hash, client_id, account_id, session, scope, expires_at)"
    " SELECT $2, $1, client_id, account_id, session, scope,"
    " now() + make_interval(secs => $3) FROM spent WHERE client_id = $4 AND redirect_uri = $5"
    " RETURNING jti)"
    " SELECT spent.client_id,",
    1,
)


class Spent(Exception):
    """The code was used before (its tokens are revoked now), or never existed/expired."""


class Grants:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def issue_code(
        self,
        *,
        client_id: str,
        account_id: str,
        session: str,
        redirect_uri: str,
        scope: str,
        nonce: str | None,
        code_challenge: str | None,
        auth_time: int,
        sub: str,
    ) -> str:
        """A new code; the session is also recorded as signed in to the client (as `sub`),
        for the back-channel logout its end will send (auth.oidc.logout)."""
        code = secrets.token_urlsafe(32)
        await self._pool.execute(
            "WITH code AS (INSERT INTO oidc_codes (code_hash, client_id, account_id, session,"
            " redirect_uri, scope, nonce, code_challenge, auth_time, expires_at) VALUES ($1, $2,"
            " $3::uuid, $4, $5, $6, $7, $8, to_timestamp($9), now() + make_interval(secs => $10)))"
            " INSERT INTO oidc_session_clients (session, client_id, account_id, sub)"
            " VALUES ($4, $2, $3::uuid, $11) ON CONFLICT (session, client_id) DO NOTHING",
            digest(code),
            client_id,
            account_id,
            session,
            redirect_uri,
            scope,
            nonce,
            code_challenge,
            auth_time,
            CODE_TTL,
            sub,
        )
        return code

    async def spend_code(
        self, code: str, *, record: tuple[str, float, str, str] | None = None
    ) -> Code:
        """The code's grant, marked used, in one round trip with the patron's details;
        `Spent` (after revoking what a first use issued) if it was used, expired or unknown.

        With `record` (jti, ttl, client id, redirect URI), the access token is recorded in
        the same statement if the code belongs to that client and redirect URI."""
        key = digest(code)
        if record is None:
            row = await self._pool.fetchrow(_SPEND, key)
        else:
            row = await self._pool.fetchrow(_SPEND_AND_RECORD, key, *record)
        if row is None:
            await self._pool.execute(
                "UPDATE oidc_tokens SET revoked_at = now() WHERE code_hash = $1"
                " AND revoked_at IS NULL",
                key,
            )
            raise Spent()
        return Code(
            row["client_id"],
            row["account_id"],
            row["session"],
            row["redirect_uri"],
            row["scope"],
            row["nonce"],
            row["code_challenge"],
            int(row["auth_time"]),
            row["username"],
            row["email"],
            row["pass_number"],
            bool(row["live"]),
        )

    async def revoke_token(self, jti: str) -> None:
        await self._pool.execute(
            "UPDATE oidc_tokens SET revoked_at = now() WHERE jti = $1 AND revoked_at IS NULL", jti
        )

    async def live_token(self, jti: str) -> tuple[str, str] | None:
        """(account id, scope) of an access token that is neither revoked nor expired, and
        whose patron and gateway session are still live."""
        row = await self._pool.fetchrow(
            "SELECT t.account_id::text AS account_id, t.scope FROM oidc_tokens t"
            " JOIN accounts a ON a.id = t.account_id"
            " JOIN sessions s ON s.sid_hash = decode(t.session, 'hex')"
            " WHERE t.jti = $1 AND t.revoked_at IS NULL AND t.expires_at > now()"
            " AND NOT a.disabled AND s.revoked_at IS NULL AND s.expires_at > now()",
            jti,
        )
        return (row["account_id"], row["scope"]) if row is not None else None

    async def consented(self, account_id: str, client_id: str) -> frozenset[str]:
        scope = await self._pool.fetchval(
            "SELECT scope FROM oidc_consents WHERE account_id = $1::uuid AND client_id = $2",
            account_id,
            client_id,
        )
        return frozenset(scope.split()) if scope else frozenset()

    async def consent(self, account_id: str, client_id: str, scopes: frozenset[str]) -> None:
        """Remember the patron's yes to these scopes (added to what they allowed before)."""
        await self._pool.execute(
            "INSERT INTO oidc_consents AS c (account_id, client_id, scope)"
            " VALUES ($1::uuid, $2, $3) ON CONFLICT (account_id, client_id) DO UPDATE SET"
            " scope = (SELECT string_agg(DISTINCT s, ' ' ORDER BY s) FROM unnest("
            "   string_to_array(c.scope, ' ') || string_to_array(EXCLUDED.scope, ' ')) AS s),"
            " granted_at = now()",
            account_id,
            client_id,
            " ".join(sorted(scopes)),
        )

    async def pairwise_secret(self) -> bytes:
        """The secret behind pairwise subjects: made once, kept in the database (it must
        outlive every key rotation, or a client would see its patrons change)."""
        await self._pool.execute(
            "INSERT INTO oidc_secrets (name, value) VALUES ('pairwise', $1)"
            " ON CONFLICT (name) DO NOTHING",
            secrets.token_bytes(32),
        )
        value = await self._pool.fetchval("SELECT value FROM oidc_secrets WHERE name = 'pairwise'")
        return bytes(value)

    async def purge(self) -> None:
        await self._pool.execute(
            "DELETE FROM oidc_codes WHERE expires_at < now() - interval '1 day'"
        )
        await self._pool.execute(
            "DELETE FROM oidc_tokens WHERE expires_at < now() - interval '1 day'"
        )
