-- Logging out everywhere: which connected libraries each gateway session signed in to (so a
-- logout can tell them, OpenID Back-Channel Logout 1.0), the back-channel deliveries still to
-- make, refresh tokens, and what the patron's own list of sessions shows.

-- One row per gateway session and client that got a code in it. `sub` is what that client
-- knows the patron by (public or pairwise), so the logout token can name them without the
-- client configuration at hand (an `accounts disable` on the command line writes these too).
CREATE TABLE oidc_session_clients (
    session     text NOT NULL,          -- the gateway session (hex SHA-256 of its id)
    client_id   text NOT NULL,
    account_id  uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    sub         text NOT NULL,
    first_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session, client_id)
);
CREATE INDEX oidc_session_clients_account ON oidc_session_clients (account_id);

-- Logout tokens to deliver: written in the transaction that ends the session (so a logout
-- never waits for a library's server), posted by a worker with back-off until delivered or
-- given up. The token itself is signed at each attempt (its `iat` and `exp` are fresh).
CREATE TABLE backchannel_logouts (
    id               bigserial PRIMARY KEY,
    client_id        text NOT NULL,
    session          text NOT NULL,
    sub              text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    given_up_at      timestamptz,
    last_error       text
);
CREATE INDEX backchannel_logouts_due ON backchannel_logouts (next_attempt_at)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;

-- Refresh tokens, kept as their SHA-256. Each use spends one and issues the next of the same
-- family; a spent one presented again revokes the family (it was stolen, or the client's
-- copy was). `offline` ones (offline_access granted) outlive the browser session.
CREATE TABLE oidc_refresh_tokens (
    token_hash  bytea PRIMARY KEY,
    family      uuid NOT NULL,
    client_id   text NOT NULL,
    account_id  uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    session     text NOT NULL,
    scope       text NOT NULL,
    offline     boolean NOT NULL,
    auth_time   timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX oidc_refresh_family ON oidc_refresh_tokens (family);
CREATE INDEX oidc_refresh_live_session ON oidc_refresh_tokens (session) WHERE revoked_at IS NULL;
CREATE INDEX oidc_refresh_live_account ON oidc_refresh_tokens (account_id) WHERE revoked_at IS NULL;
CREATE INDEX oidc_refresh_expires ON oidc_refresh_tokens (expires_at);

-- An access token minted from a refresh token belongs to its family; one minted from an
-- offline family lives on without the browser session (but not without the family).
ALTER TABLE oidc_tokens ADD COLUMN family uuid;
ALTER TABLE oidc_tokens ADD COLUMN offline boolean NOT NULL DEFAULT false;
CREATE INDEX oidc_tokens_family ON oidc_tokens (family) WHERE family IS NOT NULL;

-- The patron's list of sessions: the browser it was started from and when it was last used
-- (recorded at most once a minute a session; never where from).
ALTER TABLE sessions ADD COLUMN user_agent text;
ALTER TABLE sessions ADD COLUMN last_seen_at timestamptz;
