-- Failed-login counters shared by every instance (in the spirit of Authelia's regulation).
-- One row per key: an account (its id, so username and pass number share a counter), an
-- unknown login name (its canonical form, so unknown names are throttled like real ones),
-- or a client address (for password spraying).
CREATE TABLE login_throttle (
    key             text PRIMARY KEY,
    failures        integer NOT NULL DEFAULT 0,
    last_failure_at timestamptz NOT NULL DEFAULT now(),
    blocked_until   timestamptz
);
CREATE INDEX login_throttle_last_failure ON login_throttle (last_failure_at);
