-- The audit trail: every staff action and every security event of a patron, one row each.
-- Append-only: nothing in the application updates or deletes a row. The triggers refuse it
-- for every role (the table's owner included, short of dropping the trigger, which is
-- itself recorded in PostgreSQL's own log); the privileges refuse it for any role the
-- operator runs the gateway as that does not own the table (docs/operations.md).
CREATE TABLE audit_events (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor_kind  text NOT NULL CHECK (actor_kind IN ('patron', 'staff', 'operator', 'system')),
    actor_id    text,              -- the patron's account id, the staff member's id, the OS user
    actor_name  text,              -- as the actor was known at the time (username, e-mail)
    action      text NOT NULL,     -- e.g. login_succeeded, helpdesk_reset_sent (auth/audit)
    account_id  uuid,              -- whom: the patron concerned (no foreign key: rows outlive)
    staff_id    uuid,              -- whom: the staff member concerned (an admin's action)
    remote      text,              -- from where: the client address as the gateway saw it
    user_agent  text,
    reason      text,              -- a staff action's stated reason
    request_id  text,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_events_by_account ON audit_events (account_id, at DESC) WHERE account_id IS NOT NULL;
CREATE INDEX audit_events_by_staff ON audit_events (staff_id, at DESC) WHERE staff_id IS NOT NULL;
CREATE INDEX audit_events_by_actor ON audit_events (actor_kind, actor_id, at DESC);
CREATE INDEX audit_events_at ON audit_events (at);

CREATE FUNCTION audit_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON audit_events FROM PUBLIC;

-- What the helpdesk shows of a patron's mail: whose it is and what kind (never its body).
ALTER TABLE outbox ADD COLUMN account_id uuid;
ALTER TABLE outbox ADD COLUMN kind text;
CREATE INDEX outbox_by_account ON outbox (account_id, created_at DESC) WHERE account_id IS NOT NULL;
