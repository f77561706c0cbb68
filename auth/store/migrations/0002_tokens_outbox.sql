-- Single-use links mailed to a patron: password reset and activation of a new member.
-- Only the SHA-256 of the token is stored; the token itself exists only in the mail.
CREATE TABLE account_tokens (
    token_hash  bytea PRIMARY KEY,
    account_id  uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    purpose     text NOT NULL CHECK (purpose IN ('reset', 'activate')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX account_tokens_by_account ON account_tokens (account_id, purpose, created_at);

-- Mail waiting to be sent. A mail is committed in the same transaction as the action that
-- caused it, and a background worker sends it with retries, so an SMTP outage loses nothing
-- and never fails a patron's request. Bodies are cleared once sent (they may hold links).
CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    recipient        text NOT NULL,
    subject          text NOT NULL,
    body_text        text NOT NULL,
    body_html        text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    last_error       text
);
CREATE INDEX outbox_pending ON outbox (next_attempt_at) WHERE sent_at IS NULL;
