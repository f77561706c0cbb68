// A PostgreSQL storage adapter for npm `oidc-provider`, for bench/oidc.py's production row.
//
// oidc-provider ships with an in-memory adapter for development only: an LRU of 1,000 entries in
// the node process, lost on restart and not shared between processes. Its documentation asks a
// deployment for an adapter of its own (the interface: upsert, find, findByUid, findByUserCode,
// consume, destroy, revokeByGrantId), and most are a key-value table like this one: one row per
// stored model instance, its payload as JSON, with columns for the three lookups that are not by
// id (the grant, a session's uid, a device's user code) and its expiry. Every statement is a
// named prepared statement of node-postgres, planned once per connection, as the gateway's
// asyncpg does with its own.
//
//   const Adapter = await postgresAdapter(pool);   // a pg.Pool; creates the table if needed
//   new Provider(issuer, { adapter: Adapter, ... });

const SCHEMA = [
  `CREATE TABLE IF NOT EXISTS oidc_provider_models (
     model text NOT NULL,
     id text NOT NULL,
     payload jsonb NOT NULL,
     grant_id text,
     uid text,
     user_code text,
     expires_at timestamptz,
     consumed_at timestamptz,
     PRIMARY KEY (model, id))`,
  `CREATE INDEX IF NOT EXISTS oidc_provider_models_grant
     ON oidc_provider_models (grant_id) WHERE grant_id IS NOT NULL`,
  `CREATE INDEX IF NOT EXISTS oidc_provider_models_uid
     ON oidc_provider_models (model, uid) WHERE uid IS NOT NULL`,
  `CREATE INDEX IF NOT EXISTS oidc_provider_models_user_code
     ON oidc_provider_models (model, user_code) WHERE user_code IS NOT NULL`,
];

// A row is live until its expiry; a row without one (a model stored without a lifetime) lives
// until it is destroyed.
const LIVE = "(expires_at IS NULL OR expires_at > now())";
const FOUND = `SELECT payload, EXTRACT(EPOCH FROM consumed_at)::bigint AS consumed
  FROM oidc_provider_models`;

const STATEMENTS = {
  upsert: `INSERT INTO oidc_provider_models
      (model, id, payload, grant_id, uid, user_code, expires_at)
    VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7::double precision))
    ON CONFLICT (model, id) DO UPDATE SET payload = EXCLUDED.payload,
      grant_id = EXCLUDED.grant_id, uid = EXCLUDED.uid, user_code = EXCLUDED.user_code,
      expires_at = EXCLUDED.expires_at`,
  find: `${FOUND} WHERE model = $1 AND id = $2 AND ${LIVE}`,
  findByUid: `${FOUND} WHERE model = $1 AND uid = $2 AND ${LIVE}`,
  findByUserCode: `${FOUND} WHERE model = $1 AND user_code = $2 AND ${LIVE}`,
  consume: "UPDATE oidc_provider_models SET consumed_at = now() WHERE model = $1 AND id = $2",
  destroy: "DELETE FROM oidc_provider_models WHERE model = $1 AND id = $2",
  revokeByGrantId: "DELETE FROM oidc_provider_models WHERE grant_id = $1",
};

export async function postgresAdapter(pool) {
  for (const statement of SCHEMA) await pool.query(statement);

  const run = (name, values) =>
    pool.query({ name: `oidc-provider-${name}`, text: STATEMENTS[name], values });

  // What oidc-provider expects back: the payload it stored, with `consumed` (seconds since the
  // epoch) once the instance was consumed; nothing for an unknown or expired id.
  const payloadOf = ({ rows }) => {
    if (rows.length === 0) return undefined;
    const [{ payload, consumed }] = rows;
    return consumed === null ? payload : { ...payload, consumed: Number(consumed) };
  };

  return class PostgresAdapter {
    constructor(model) {
      this.model = model;
    }

    async upsert(id, payload, expiresIn) {
      await run("upsert", [
        this.model,
        id,
        JSON.stringify(payload),
        payload.grantId ?? null,
        payload.uid ?? null,
        payload.userCode ?? null,
        expiresIn ?? null,
      ]);
    }

    async find(id) {
      return payloadOf(await run("find", [this.model, id]));
    }

    async findByUid(uid) {
      return payloadOf(await run("findByUid", [this.model, uid]));
    }

    async findByUserCode(userCode) {
      return payloadOf(await run("findByUserCode", [this.model, userCode]));
    }

    async consume(id) {
      await run("consume", [this.model, id]);
    }

    async destroy(id) {
      await run("destroy", [this.model, id]);
    }

    async revokeByGrantId(grantId) {
      await run("revokeByGrantId", [grantId]);
    }
  };
}
