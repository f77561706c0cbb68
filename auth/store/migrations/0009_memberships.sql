-- Memberships: one account, the passes of several libraries. Each row is one pass of one
-- institution (an id from institutions.yaml); a pass number is unique within its institution.
-- `ended_at` set: the pass is no longer the patron's (it no longer logs in, nor counts).
CREATE TABLE memberships (
    id                    bigserial PRIMARY KEY,
    account_id            uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    institution           text NOT NULL,
    pass_number           text NOT NULL,
    pass_number_canonical text NOT NULL,
    type                  text,
    valid_until           date,
    created_at            timestamptz NOT NULL DEFAULT now(),
    ended_at              timestamptz,
    UNIQUE (institution, pass_number_canonical)
);
CREATE INDEX memberships_by_account ON memberships (account_id);
CREATE INDEX memberships_live_pass ON memberships (pass_number_canonical) WHERE ended_at IS NULL;

-- Today's one pass number of every account becomes its membership of the default
-- institution. Its id is not known to SQL: `default` stands for it until the gateway starts
-- with an institutions file naming another default (auth.store.memberships.settle_default).
INSERT INTO memberships (account_id, institution, pass_number, pass_number_canonical, created_at)
SELECT id, 'default', pass_number, pass_number_canonical, created_at FROM accounts;

-- What the gateway knows of its configuration that SQL needs: the default institution's id,
-- for the membership of an account made on the command line.
CREATE TABLE gateway_state (
    name   text PRIMARY KEY,
    value  text NOT NULL
);

-- Two accounts made one (a patron proving a second library's pass): the absorbed account
-- stays as a record, disabled and pointing at the one it went into; the merge is recorded.
ALTER TABLE accounts ADD COLUMN merged_into uuid REFERENCES accounts (id);
CREATE TABLE account_merges (
    id          bigserial PRIMARY KEY,
    survivor    uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    absorbed    uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    username    text NOT NULL,          -- the absorbed account's username, freed by the merge
    passes      text NOT NULL,          -- what moved: institution:pass_number, comma-separated
    merged_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX account_merges_survivor ON account_merges (survivor);

-- A pass number is unique within its institution (above), no longer across the accounts:
-- two libraries may both have handed out 12345678. The account keeps its first pass number
-- (X-Library-Pass-Number, the username rule), looked up through memberships from now on.
ALTER TABLE accounts DROP CONSTRAINT accounts_pass_number_canonical_key;
CREATE INDEX accounts_pass_number_canonical ON accounts (pass_number_canonical);
