-- Password-reset and forgotten-username mails sent, one row per mail and key: the client
-- address that asked ('addr:…', IPv6 per /64) and, for a forgotten-username mail, the mailbox
-- it went to ('mailbox:…', the canonical e-mail address). The forms count a key's rows in
-- sliding windows before they send (auth/credentials/mail_limits.py); the hourly housekeeping
-- deletes rows older than the longest window.
CREATE TABLE recovery_mails (
    key     text NOT NULL,
    sent_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX recovery_mails_key_sent_at ON recovery_mails (key, sent_at);
