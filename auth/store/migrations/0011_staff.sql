-- The staff console's own accounts: helpdesk and admin staff, never patrons. A staff login
-- always takes a second factor (a TOTP app or a passkey); one-time recovery codes stand in
-- when the factor is lost. SQL in auth/store/staff.py and auth/store/staff_sessions.py.

-- A staff member: looked up by the canonical e-mail address (NFKC + case folding). Without
-- a password hash the member has not chosen a password yet; `activated_at` is set once the
-- first second factor is enrolled (until then the member cannot sign in).
CREATE TABLE staff_members (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email            text NOT NULL,
    email_canonical  text NOT NULL UNIQUE,
    role             text NOT NULL CHECK (role IN ('helpdesk', 'admin')),
    password_hash    text,
    disabled         boolean NOT NULL DEFAULT false,
    activated_at     timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now()
);

-- Second factors. A TOTP app: its secret encrypted (Fernet, with a key derived from the
-- cookie keys for this purpose alone) and the last time step accepted, so a code is never
-- taken twice. A passkey (WebAuthn): the credential id, its COSE public key, the
-- authenticator's signature counter and transports.
CREATE TABLE staff_factors (
    id              bigserial PRIMARY KEY,
    staff_id        uuid NOT NULL REFERENCES staff_members (id) ON DELETE CASCADE,
    kind            text NOT NULL CHECK (kind IN ('totp', 'passkey')),
    name            text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_used_at    timestamptz,
    totp_secret     bytea,
    totp_last_step  bigint,
    credential_id   bytea UNIQUE,
    public_key      bytea,
    sign_count      bigint,
    transports      text[] NOT NULL DEFAULT '{}',
    CHECK ((kind = 'totp') = (totp_secret IS NOT NULL)),
    CHECK ((kind = 'passkey') = (credential_id IS NOT NULL AND public_key IS NOT NULL
                                 AND sign_count IS NOT NULL))
);
CREATE INDEX staff_factors_by_member ON staff_factors (staff_id);
-- One TOTP app a member: a second one would only double the codes that open the account.
CREATE UNIQUE INDEX staff_factors_one_totp ON staff_factors (staff_id) WHERE kind = 'totp';

-- One-time recovery codes: only their SHA-256 (salted with the member's id) is kept; the
-- codes carry 80 random bits, so the hashes cannot be searched. Used codes stay, marked.
CREATE TABLE staff_recovery_codes (
    staff_id   uuid NOT NULL REFERENCES staff_members (id) ON DELETE CASCADE,
    code_hash  bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at    timestamptz,
    PRIMARY KEY (staff_id, code_hash)
);

-- Activation links (mailed by `staff add` and by an admin): the SHA-256 of the token only,
-- single use, with an expiry.
CREATE TABLE staff_tokens (
    token_hash  bytea PRIMARY KEY,
    staff_id    uuid NOT NULL REFERENCES staff_members (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX staff_tokens_by_member ON staff_tokens (staff_id);

-- Staff sessions, kept on the server and read on every console request (revocation is
-- immediate on every instance). The cookie holds a random token; only its SHA-256 is kept.
-- `stage`: 'password' (the password was right, the second factor is still to come),
-- 'enrol' (a new member chose a password and must now enrol a factor) or 'full'. A pending
-- WebAuthn challenge and a TOTP secret being enrolled live on the row until used.
CREATE TABLE staff_sessions (
    id            bigserial PRIMARY KEY,
    token_hash    bytea NOT NULL UNIQUE,
    staff_id      uuid NOT NULL REFERENCES staff_members (id) ON DELETE CASCADE,
    stage         text NOT NULL CHECK (stage IN ('password', 'enrol', 'full')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    ended_at      timestamptz,
    challenge     bytea,
    pending_totp  bytea,
    user_agent    text,
    remote        text
);
CREATE INDEX staff_sessions_live_by_member ON staff_sessions (staff_id) WHERE ended_at IS NULL;
CREATE INDEX staff_sessions_created_at ON staff_sessions (created_at);
