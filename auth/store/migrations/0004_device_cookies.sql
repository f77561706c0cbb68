-- Device cookies (OWASP "Slow down online guessing attacks with device cookies"): a browser
-- that has logged in as a patron carries a signed cookie naming the account and its device
-- epoch. Raising the epoch (a password change or reset) voids every device cookie of the
-- account at once; nothing per device is stored.
ALTER TABLE accounts ADD COLUMN device_epoch integer NOT NULL DEFAULT 0;

-- Address counters decay instead of counting consecutive failures: a reading room behind one
-- address makes mistakes all day, and only a burst of them should slow it down.
ALTER TABLE login_throttle ADD COLUMN score double precision NOT NULL DEFAULT 0;
UPDATE login_throttle SET score = failures;
