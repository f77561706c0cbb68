// A relying party nobody here wrote: panva's openid-client (an OpenID Certified RP library)
// logs a patron in at the gateway, in two steps the test runs as two processes, the browser's
// part (the login) done by the test in between.
//
//   node relying_party.mjs authorize   prints {"url": …, "checks": {…}}: the authorization URL
//                                      (PKCE S256, state, nonce) and what the callback must match
//   node relying_party.mjs callback    reads {"callback": URL, "checks": {…}} on stdin; prints
//                                      {"id_token": claims, "userinfo": claims, …}, or, when
//                                      openid-client refuses the answer, {"refused": {…}} and
//                                      exits 3
//
// Read from the environment: OPENID_CLIENT_PREFIX (the npm prefix openid-client is installed
// under), OIDC_ISSUER, OIDC_CLIENT_ID, OIDC_CLIENT_SECRET (absent: a public client),
// OIDC_CLIENT_AUTH (client_secret_basic, client_secret_post or none), OIDC_REDIRECT_URI and
// OIDC_SCOPE.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const REFUSED = 3;

function setting(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

// openid-client needs the WebCrypto global, which Node 18 (Debian 12's) keeps behind a flag.
globalThis.crypto ??= (await import("node:crypto")).webcrypto;

// openid-client lives in the test cache, not beside this file: resolve it from there.
const resolve = createRequire(join(setting("OPENID_CLIENT_PREFIX"), "package.json")).resolve;
const client = await import(pathToFileURL(resolve("openid-client")).href);

function clientAuth() {
  const method = setting("OIDC_CLIENT_AUTH");
  switch (method) {
    case "client_secret_basic":
      return client.ClientSecretBasic(setting("OIDC_CLIENT_SECRET"));
    case "client_secret_post":
      return client.ClientSecretPost(setting("OIDC_CLIENT_SECRET"));
    case "none":
      return client.None();
    default:
      throw new Error(`unknown OIDC_CLIENT_AUTH ${method}`);
  }
}

async function discover() {
  return client.discovery(
    new URL(setting("OIDC_ISSUER")),
    setting("OIDC_CLIENT_ID"),
    undefined,
    clientAuth(),
    // The gateway under test answers on plain http on loopback.
    { execute: [client.allowInsecureRequests] },
  );
}

async function authorize() {
  const config = await discover();
  const checks = {
    code_verifier: client.randomPKCECodeVerifier(),
    state: client.randomState(),
    nonce: client.randomNonce(),
  };
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: setting("OIDC_REDIRECT_URI"),
    scope: setting("OIDC_SCOPE"),
    code_challenge: await client.calculatePKCECodeChallenge(checks.code_verifier),
    code_challenge_method: "S256",
    state: checks.state,
    nonce: checks.nonce,
  });
  return { url: url.href, checks };
}

async function callback() {
  const { callback: callbackUrl, checks } = JSON.parse(readFileSync(0, "utf8"));
  const config = await discover();
  let tokens;
  try {
    // Checks the answer (state, iss) and the ID token: its signature against the provider's
    // JWKS, alg, iss, aud, azp, exp, iat and nonce. Not at_hash: openid-client 6 leaves that
    // optional claim of the code flow alone, so the test checks it.
    tokens = await client.authorizationCodeGrant(config, new URL(callbackUrl), {
      pkceCodeVerifier: checks.code_verifier,
      expectedState: checks.state,
      expectedNonce: checks.nonce,
      idTokenExpected: true,
    });
  } catch (error) {
    process.exitCode = REFUSED;
    return {
      refused: {
        name: error.name,
        code: error.code ?? null,
        message: error.message,
        cause: error.cause === undefined ? null : String(error.cause),
      },
    };
  }
  const claims = tokens.claims();
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  return {
    id_token: claims,
    id_token_header: JSON.parse(Buffer.from(tokens.id_token.split(".")[0], "base64url")),
    userinfo,
    access_token: tokens.access_token,
    token_type: tokens.token_type,
    scope: tokens.scope ?? null,
    expires_in: tokens.expiresIn() ?? null,
  };
}

const steps = { authorize, callback };
const step = steps[process.argv[2]];
if (step === undefined) {
  console.error(`usage: node relying_party.mjs ${Object.keys(steps).join("|")}`);
  process.exit(2);
}
console.log(JSON.stringify(await step()));
