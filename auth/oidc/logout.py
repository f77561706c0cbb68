"""What ending gateway sessions means for the connected libraries, in the same transaction.

Every way a session ends (`/auth/logout`, the end-session endpoint, a password change or
reset, `accounts disable`, the patron ending one of their sessions) goes through
`SessionRegistry`, which calls `sessions_ended` with the sessions it just revoked:

- each client the patron used in one of them gets a back-channel logout queued
  (`backchannel_logouts`, delivered by `auth.oidc.backchannel`), so no logout ever waits for
  a library's server, and a delivery outlives a restart;
- the refresh tokens bound to those sessions stop working, and so do the access tokens minted
  from them; offline ones (`offline_access`) survive a logout, but not a new password or a
  disabled account (`credentials=True`).

The SQL needs no client configuration: the command line, which has none, ends sessions the
same way, and the worker decides at delivery which clients want a logout token.
"""

from __future__ import annotations

from typing import Any

CHANNEL = "library_gateway_backchannel"


async def sessions_ended(
    conn: Any, sessions: list[str], *, account_id: str | None = None, credentials: bool = False
) -> int:
    """Queue the back-channel logouts of `sessions` (hex session hashes) and end their
    refresh tokens; with `credentials`, every refresh token of `account_id` too. Returns the
    number of logouts queued."""
    queued = 0
    if sessions:
        status = await conn.execute(
            "INSERT INTO backchannel_logouts (client_id, session, sub)"
            " SELECT client_id, session, sub FROM oidc_session_clients"
            " WHERE session = ANY($1::text[])",
            sessions,
        )
        queued = int(status.split()[-1])
        if queued:
            await conn.execute("SELECT pg_notify($1, '')", CHANNEL)
    families = await conn.fetch(
        "UPDATE oidc_refresh_tokens SET revoked_at = now() WHERE revoked_at IS NULL"
        " AND ((session = ANY($1::text[]) AND NOT offline)"
        "      OR ($3 AND account_id = $2::uuid))"
        " RETURNING family",
        sessions,
        account_id,
        credentials and account_id is not None,
    )
    if families:
        await conn.execute(
            "UPDATE oidc_tokens SET revoked_at = now()"
            " WHERE family = ANY($1::uuid[]) AND revoked_at IS NULL",
            list({row["family"] for row in families}),
        )
    return queued
