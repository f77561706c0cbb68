-- The consent questions patrons answered. The question itself lives in the patron's session,
-- an encrypted cookie that a double click (two posts with the same cookie) or an old copy of
-- the cookie brings back; a question recorded here has had its one answer. Kept until the
-- question would have expired anyway.
CREATE TABLE oidc_consent_answers (
    question_hash  bytea PRIMARY KEY,       -- SHA-256 of the question's id
    expires_at     timestamptz NOT NULL
);
CREATE INDEX oidc_consent_answers_expires ON oidc_consent_answers (expires_at);
