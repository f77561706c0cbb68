-- Accounts: the stable id never changes; username and pass number are looked up by their
-- canonical form (NFKC + case folding, computed by the application).
CREATE TABLE accounts (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    pass_number           text NOT NULL,
    pass_number_canonical text NOT NULL UNIQUE,
    username              text NOT NULL,
    username_canonical    text NOT NULL UNIQUE,
    email                 text,
    email_canonical       text,
    password_hash         text,
    disabled              boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX accounts_email_canonical ON accounts (email_canonical);

-- One row per login. The cookie carries a random session id; only its SHA-256 is stored.
-- A row with revoked_at set means every copy of that cookie is dead, on every instance.
CREATE TABLE sessions (
    sid_hash    bytea PRIMARY KEY,
    account_id  uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX sessions_live_by_account ON sessions (account_id) WHERE revoked_at IS NULL;
CREATE INDEX sessions_expires_at ON sessions (expires_at);

-- Keys that sign the identity JWT. The private key is stored encrypted with the cookie keys
-- (Fernet), so a copy of the database alone cannot mint identities.
CREATE TABLE signing_keys (
    kid          text PRIMARY KEY,
    algorithm    text NOT NULL,
    private_key  bytea NOT NULL,
    public_jwk   jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    active       boolean NOT NULL DEFAULT false,
    retired_at   timestamptz
);
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (active) WHERE active;
