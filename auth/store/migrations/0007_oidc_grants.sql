-- The OpenID Connect provider's grants: authorization codes (single use, a minute), the
-- access tokens issued for them (so a replayed code revokes what the first use issued, and
-- UserInfo can refuse a revoked token), the consents patrons gave, and the secret that makes
-- pairwise subjects.
CREATE TABLE oidc_codes (
    code_hash       bytea PRIMARY KEY,
    client_id       text NOT NULL,
    account_id      uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    session         text NOT NULL,          -- the gateway session (hex SHA-256 of its id)
    redirect_uri    text NOT NULL,
    scope           text NOT NULL,
    nonce           text,
    code_challenge  text,
    auth_time       timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz
);
CREATE INDEX oidc_codes_expires ON oidc_codes (expires_at);

CREATE TABLE oidc_tokens (
    jti         text PRIMARY KEY,
    code_hash   bytea,
    client_id   text NOT NULL,
    account_id  uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    session     text NOT NULL,
    scope       text NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX oidc_tokens_code ON oidc_tokens (code_hash);
CREATE INDEX oidc_tokens_expires ON oidc_tokens (expires_at);

CREATE TABLE oidc_consents (
    account_id  uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    client_id   text NOT NULL,
    scope       text NOT NULL,              -- the scopes granted, sorted, space-separated
    granted_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, client_id)
);

CREATE TABLE oidc_secrets (
    name   text PRIMARY KEY,
    value  bytea NOT NULL
);
