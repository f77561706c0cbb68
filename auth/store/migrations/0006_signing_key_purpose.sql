-- Signing keys get a purpose: 'identity' signs the X-Library-Identity JWT for backends (every
-- key made so far, kid and row unchanged), 'oidc' the OpenID Connect provider's tokens. Each
-- purpose keeps one active key per algorithm (identity: EdDSA; oidc: RS256, ES256, EdDSA).
ALTER TABLE signing_keys ADD COLUMN purpose text NOT NULL DEFAULT 'identity'
    CHECK (purpose IN ('identity', 'oidc'));
DROP INDEX signing_keys_one_active;
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys (purpose, algorithm) WHERE active;
