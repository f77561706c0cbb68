// The reference OpenID Connect provider for bench/oidc.py: panva's npm `oidc-provider`, as its
// quick start runs it (https://github.com/panva/node-oidc-provider#quick-start), with one
// confidential client and otherwise its own defaults: its development interactions (any login,
// then a consent page), its in-memory storage, its generated development signing key (RS256)
// and its default `findAccount`. Nothing here tunes it.
//
// With OIDC_DATABASE_URL set, it stores what it keeps (sessions, grants, codes, tokens,
// interactions) in that PostgreSQL database through postgres_adapter.mjs and npm `pg`, as a
// production deployment must: the in-memory store is for development only.
//
//   node oidc_provider.mjs
//
// Read from the environment: OIDC_PROVIDER_PREFIX (the npm prefix oidc-provider is installed
// under), OIDC_PORT, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI and, optionally,
// OIDC_DATABASE_URL. It listens on 127.0.0.1 only; the issuer is http://127.0.0.1:OIDC_PORT.
import { createServer } from "node:http";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

function setting(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

// oidc-provider lives in the cache, not beside this file: resolve it from there.
const resolve = createRequire(join(setting("OIDC_PROVIDER_PREFIX"), "package.json")).resolve;
const { default: Provider } = await import(pathToFileURL(resolve("oidc-provider")).href);

// The production store, when asked for: a pool of 10 connections (the gateway's default too).
let adapter;
if (process.env.OIDC_DATABASE_URL) {
  const { default: pg } = await import(pathToFileURL(resolve("pg")).href);
  const { postgresAdapter } = await import("./postgres_adapter.mjs");
  const pool = new pg.Pool({ connectionString: process.env.OIDC_DATABASE_URL, max: 10 });
  adapter = await postgresAdapter(pool);
}

const port = Number(setting("OIDC_PORT"));
const provider = new Provider(`http://127.0.0.1:${port}`, {
  ...(adapter && { adapter }),
  clients: [
    {
      client_id: setting("OIDC_CLIENT_ID"),
      client_secret: setting("OIDC_CLIENT_SECRET"),
      redirect_uris: [setting("OIDC_REDIRECT_URI")],
      // The default, written out: the same method the benchmark uses at the gateway.
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
});

// provider.listen() would bind every interface; the benchmark stays on loopback.
createServer(provider.callback()).listen(port, "127.0.0.1", () => {
  console.log(`oidc-provider listening on http://127.0.0.1:${port}`);
});
