"""The provider's tables: authorization codes, the access tokens they produced, consents (and
the consent questions answered), and the pairwise-subject secret. Every SQL statement on them
is here.

A code is kept only as its SHA-256 (a database leak gives no usable code), is spent by one
atomic UPDATE (two racing exchanges cannot both win), and a second use revokes every token the
first one produced (RFC 6749 4.1.2: the code was stolen, so what it bought is suspect too).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import asyncpg

from auth.memberships import Membership
from auth.store.memberships import MEMBERSHIPS_OF_A, memberships_from_json

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
    memberships: tuple[Membership, ...] = ()


# A code is spent, and what it buys recorded, in one statement: the access token about to be
# issued (`jti`) and the first refresh token of a new family, when the code is presented by the
# client it was issued to, for its redirect URI. A refresh token bound to the browser session
# lasts as long as that session may; an offline one (offline_access granted) OFFLINE_TTL.
# The one string spliced in is MEMBERSHIPS_OF_A, a constant subquery: nothing from outside.
_SPEND = (
    "WITH spent AS ("  # noqa: S608
    " UPDATE oidc_codes SET used_at = now()"
    " WHERE code_hash = $1 AND used_at IS NULL AND expires_at > now()"
    " RETURNING client_id, account_id, session, redirect_uri, scope, nonce, code_challenge,"
    " auth_time, 'offline_access' = ANY(string_to_array(scope, ' ')) AS offline),"
    " bought AS (SELECT * FROM spent WHERE client_id = $4 AND redirect_uri = $5),"
    " issued AS ("
    " INSERT INTO oidc_tokens (jti, code_hash, client_id, account_id, session, scope, expires_at,"
    " family, offline)"
    " SELECT $2, $1, client_id, account_id, session, scope, now() + make_interval(secs => $3),"
    " $7::uuid, offline FROM bought RETURNING jti),"
    " refreshing AS ("
    " INSERT INTO oidc_refresh_tokens (token_hash, family, client_id, account_id, session, scope,"
    " offline, auth_time, expires_at)"
    " SELECT $6, $7::uuid, client_id, account_id, session, scope, offline, auth_time,"
    " CASE WHEN offline THEN now() + make_interval(secs => $8) ELSE COALESCE((SELECT"
    " s.expires_at FROM sessions s WHERE s.sid_hash = decode(bought.session, 'hex')), now()) END"
    " FROM bought RETURNING family)"
    " SELECT spent.client_id, spent.account_id::text AS account_id, spent.session,"
    " spent.redirect_uri, spent.scope, spent.nonce, spent.code_challenge,"
    " EXTRACT(EPOCH FROM spent.auth_time)::bigint AS auth_time,"
    " a.username, a.email, a.pass_number,"
    " (" + MEMBERSHIPS_OF_A + ")::text AS memberships,"
    " NOT a.disabled AND EXISTS (SELECT 1 FROM sessions s"
    "   WHERE s.sid_hash = decode(spent.session, 'hex') AND s.revoked_at IS NULL"
    "   AND s.expires_at > now()) AS live"
    " FROM spent JOIN accounts a ON a.id = spent.account_id"
)

OFFLINE_TTL = 30 * 86400.0
"""How long an offline refresh token lasts unused; each use starts it anew."""


@dataclass(frozen=True, slots=True)
class Purchase:
    """What a code's exchange records with the code (`Grants.spend_code`): the access token
    about to be issued, and the first refresh token of its family."""

    jti: str
    access_ttl: float
    client_id: str
    redirect_uri: str
    refresh_token: str
    family: str


@dataclass(frozen=True, slots=True)
class Refreshed:
    """A refresh token's grant, after it was spent for the next one."""

    account_id: str
    session: str
    scope: str
    auth_time: int
    username: str
    email: str | None
    pass_number: str
    memberships: tuple[Membership, ...] = ()


class RefreshRefused(Exception):
    """The refresh token cannot be used: `reason` is for the client's error description."""

    def __init__(self, reason: str, *, error: str = "invalid_grant") -> None:
        super().__init__(reason)
        self.reason = reason
        self.error = error


class RefreshReused(RefreshRefused):
    """A spent refresh token came back: its family is revoked (a security event)."""

    def __init__(self, client_id: str, account_id: str) -> None:
        super().__init__("the refresh token was used before")
        self.client_id = client_id
        self.account_id = account_id


@dataclass(frozen=True, slots=True)
class TokenState:
    """An access or refresh token as introspection tells it (RFC 7662)."""

    account_id: str
    client_id: str
    scope: str
    session: str
    expires_at: int
    issued_at: int
    username: str


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

    async def spend_code(self, code: str, purchase: Purchase) -> Code:
        """The code's grant, marked used, in one round trip with the patron's details and, if
        the code is the presenting client's for this redirect URI, what `purchase` names
        recorded; `Spent` (after revoking what a first use issued) if it was used, expired
        or unknown."""
        key = digest(code)
        row = await self._pool.fetchrow(
            _SPEND,
            key,
            purchase.jti,
            purchase.access_ttl,
            purchase.client_id,
            purchase.redirect_uri,
            digest(purchase.refresh_token),
            purchase.family,
            OFFLINE_TTL,
        )
        if row is None:
            # Everything the grant the code started has issued: the first access token,
            # and the refresh tokens and the access tokens they bought since, whether or
            # not that first access token was revoked on its own meanwhile.
            await self._pool.execute(
                "WITH bought AS (SELECT DISTINCT family FROM oidc_tokens WHERE code_hash = $1"
                " AND family IS NOT NULL),"
                " refreshing AS (UPDATE oidc_refresh_tokens SET revoked_at = now()"
                " WHERE revoked_at IS NULL AND family IN (SELECT family FROM bought))"
                " UPDATE oidc_tokens SET revoked_at = now() WHERE revoked_at IS NULL"
                " AND (code_hash = $1 OR family IN (SELECT family FROM bought))",
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
            memberships_from_json(row["memberships"]),
        )

    async def revoke_family(self, family: str) -> None:
        """Revoke a grant's refresh tokens and every access token minted in it."""
        await self._pool.execute(
            "WITH r AS (UPDATE oidc_refresh_tokens SET revoked_at = now()"
            " WHERE family = $1::uuid AND revoked_at IS NULL)"
            " UPDATE oidc_tokens SET revoked_at = now() WHERE family = $1::uuid"
            " AND revoked_at IS NULL",
            family,
        )

    async def refresh(
        self,
        token: str,
        *,
        client_id: str,
        scope: frozenset[str] | None,
        next_token: str,
        jti: str,
        access_ttl: float,
    ) -> Refreshed:
        """Spend a refresh token for the next of its family and record the access token
        `jti`. A spent token presented again revokes the family (`RefreshReused`); so does
        one whose browser session has ended (unless offline) or whose account is disabled."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                # MEMBERSHIPS_OF_A is a constant subquery: nothing from outside is spliced in.
                "SELECT r.family::text AS family, r.client_id, r.account_id::text AS account_id,"  # noqa: S608
                " r.session, r.scope, r.offline, r.used_at IS NOT NULL AS used,"
                " r.revoked_at IS NOT NULL AS revoked, r.expires_at <= now() AS expired,"
                " EXTRACT(EPOCH FROM r.auth_time)::bigint AS auth_time, r.expires_at,"
                " a.username, a.email, a.pass_number, a.disabled,"
                " (" + MEMBERSHIPS_OF_A + ")::text AS memberships,"
                " EXISTS (SELECT 1 FROM sessions s WHERE s.sid_hash = decode(r.session, 'hex')"
                "   AND s.revoked_at IS NULL AND s.expires_at > now()) AS session_live"
                " FROM oidc_refresh_tokens r JOIN accounts a ON a.id = r.account_id"
                " WHERE r.token_hash = $1 FOR UPDATE OF r",
                digest(token),
            )
            refusal = _refusal(row, client_id, scope)
            if refusal is None:
                assert row is not None
                granted = " ".join(sorted(scope)) if scope is not None else row["scope"]
                await conn.execute(
                    "UPDATE oidc_refresh_tokens SET used_at = now() WHERE token_hash = $1",
                    digest(token),
                )
                await conn.execute(
                    # The next refresh token keeps the whole grant (RFC 6749 6): a narrower
                    # `scope` narrows this access token only.
                    "INSERT INTO oidc_refresh_tokens (token_hash, family, client_id, account_id,"
                    " session, scope, offline, auth_time, expires_at)"
                    " SELECT $1, family, client_id, account_id, session, scope, offline,"
                    " auth_time, CASE WHEN offline THEN now() + make_interval(secs => $3)"
                    " ELSE expires_at END FROM oidc_refresh_tokens WHERE token_hash = $2",
                    digest(next_token),
                    digest(token),
                    OFFLINE_TTL,
                )
                await conn.execute(
                    # Offline only if its own scope says so: narrowed without
                    # offline_access, it ends with the patron's session.
                    "INSERT INTO oidc_tokens (jti, client_id, account_id, session, scope,"
                    " expires_at, family, offline) SELECT $1, client_id, account_id, session,"
                    " $3, now() + make_interval(secs => $4), family,"
                    " offline AND 'offline_access' = ANY(string_to_array($3, ' '))"
                    " FROM oidc_refresh_tokens WHERE token_hash = $2",
                    jti,
                    digest(next_token),
                    granted,
                    access_ttl,
                )
                return Refreshed(
                    row["account_id"],
                    row["session"],
                    granted,
                    int(row["auth_time"]),
                    row["username"],
                    row["email"],
                    row["pass_number"],
                    memberships_from_json(row["memberships"]),
                )
        if isinstance(refusal, RefreshReused) or refusal.reason == _ENDED:
            assert row is not None
            await self.revoke_family(row["family"])
        raise refusal

    async def revoke_refresh(self, token: str, client_id: str) -> bool:
        """RFC 7009 for a refresh token of `client_id`: its whole grant ends (the family's
        refresh tokens and the access tokens minted in it). Whether it was one."""
        family = await self._pool.fetchval(
            "SELECT family::text FROM oidc_refresh_tokens WHERE token_hash = $1 AND client_id = $2",
            digest(token),
            client_id,
        )
        if family is None:
            return False
        await self.revoke_family(family)
        return True

    async def revoke_access(self, jti: str, client_id: str) -> None:
        await self._pool.execute(
            "UPDATE oidc_tokens SET revoked_at = now() WHERE jti = $1 AND client_id = $2"
            " AND revoked_at IS NULL",
            jti,
            client_id,
        )

    async def refresh_state(self, token: str) -> TokenState | None:
        """A refresh token that could be used now (RFC 7662's `active`), or None."""
        row = await self._pool.fetchrow(
            "SELECT r.account_id::text AS account_id, r.client_id, r.scope, r.session,"
            " EXTRACT(EPOCH FROM r.expires_at)::bigint AS exp,"
            " EXTRACT(EPOCH FROM r.created_at)::bigint AS iat, a.username"
            " FROM oidc_refresh_tokens r JOIN accounts a ON a.id = r.account_id"
            " WHERE r.token_hash = $1 AND r.used_at IS NULL AND r.revoked_at IS NULL"
            " AND r.expires_at > now() AND NOT a.disabled AND (r.offline OR EXISTS ("
            "   SELECT 1 FROM sessions s WHERE s.sid_hash = decode(r.session, 'hex')"
            "   AND s.revoked_at IS NULL AND s.expires_at > now()))",
            digest(token),
        )
        if row is None:
            return None
        return TokenState(
            row["account_id"],
            row["client_id"],
            row["scope"],
            row["session"],
            int(row["exp"]),
            int(row["iat"]),
            row["username"],
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
            " WHERE t.jti = $1 AND t.revoked_at IS NULL AND t.expires_at > now()"
            " AND NOT a.disabled AND (t.offline OR EXISTS (SELECT 1 FROM sessions s"
            "   WHERE s.sid_hash = decode(t.session, 'hex') AND s.revoked_at IS NULL"
            "   AND s.expires_at > now()))",
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

    async def answer(self, question: str, expires_at: int) -> bool:
        """Record the one answer to the consent question `question` (kept until
        `expires_at`, epoch seconds, when the question expires anyway); False when it was
        answered before."""
        recorded = await self._pool.fetchval(
            "INSERT INTO oidc_consent_answers (question_hash, expires_at)"
            " VALUES ($1, to_timestamp($2)) ON CONFLICT (question_hash) DO NOTHING RETURNING true",
            digest(question),
            expires_at,
        )
        return bool(recorded)

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
        await self._pool.execute(
            "DELETE FROM oidc_refresh_tokens WHERE expires_at < now() - interval '1 day'"
        )
        await self._pool.execute("DELETE FROM oidc_consent_answers WHERE expires_at < now()")


_ENDED = "the patron's session has ended"


def _refusal(
    row: asyncpg.Record | None, client_id: str, scope: frozenset[str] | None
) -> RefreshRefused | None:
    """Why a refresh token's row cannot be spent by `client_id` for `scope`, or None."""
    if row is None or row["client_id"] != client_id:
        return RefreshRefused("the refresh token is invalid")
    if row["revoked"]:
        return RefreshRefused("the refresh token was revoked")
    if row["used"]:
        return RefreshReused(client_id, row["account_id"])
    if row["expired"]:
        return RefreshRefused("the refresh token has expired")
    if row["disabled"] or not (row["offline"] or row["session_live"]):
        return RefreshRefused(_ENDED)
    if scope is not None and not scope <= frozenset(row["scope"].split()):
        return RefreshRefused("scope exceeds what was granted", error="invalid_scope")
    if scope is not None and "offline_access" not in scope and not row["session_live"]:
        # Such an access token would end with the session, which has: the grant lives on.
        return RefreshRefused("without offline_access, the patron's session must be live")
    return None
