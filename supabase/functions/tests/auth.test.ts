// How the functions verify callers: the project's JWKS (ES256), API keys, legacy HS256 only with an operator's
// LEGACY_JWT_SECRET, and machine tokens only while their machine is live.
import assert from "node:assert/strict";
import { type AuthSettings, authSettingsFromEnv, authenticate, requireRole } from "../_shared/auth.ts";
import { HttpError } from "../_shared/http.ts";
import { env, LEGACY_JWT_SECRET, mintJwt, stackTest, untrustedKey } from "./helpers.ts";

const USER = "00000000-0000-4000-8000-0000000000aa";

function withToken(token: string | null, headers: Record<string, string> = {}): Request {
  return new Request("http://local/x", { headers: token === null ? headers : { ...headers, authorization: `Bearer ${token}` } });
}

function settings(overrides: Partial<AuthSettings> = {}): AuthSettings {
  return { ...authSettingsFromEnv(), machineIsLive: () => Promise.resolve(true), ...overrides };
}

async function refusal(request: Request, options = settings()): Promise<HttpError> {
  const error = await authenticate(request, options).catch((e) => e);
  assert.ok(error instanceof HttpError, String(error));
  assert.equal(error.status, 401);
  return error;
}

stackTest("auth: an ES256 session verified with the project's JWKS yields the caller", async () => {
  const caller = await authenticate(withToken(await mintJwt({ role: "authenticated", sub: USER })), settings());
  assert.deepEqual(caller, { role: "authenticated", userId: USER, machineId: null });
});

stackTest("auth: the project's API keys act as their roles; an sb_secret_ key works in apikey", async () => {
  assert.equal((await authenticate(withToken(env("SUPABASE_SERVICE_ROLE_KEY")), settings())).role, "service_role");
  assert.equal((await authenticate(withToken(env("SUPABASE_ANON_KEY")), settings())).role, "anon");
  const keyed = settings({ apiKeys: new Map([["sb_secret_local_test", "service_role"]]) });
  assert.equal((await authenticate(withToken(null, { apikey: "sb_secret_local_test" }), keyed)).role, "service_role");
  assert.equal((await refusal(withToken("sb_secret_wrong"), keyed)).message, "unknown API key");
});

stackTest("auth: a machine token is accepted only while its machine is live", async () => {
  const token = await mintJwt({ role: "trader_machine", sub: USER, machine_id: "m1", machine_gen: 3 });
  const seen: unknown[] = [];
  const live = settings({ machineIsLive: (user, machine, gen) => (seen.push([user, machine, gen]), Promise.resolve(true)) });
  assert.deepEqual(await authenticate(withToken(token), live), { role: "trader_machine", userId: USER, machineId: "m1" });
  assert.deepEqual(seen, [[USER, "m1", 3]]);
  const dead = await refusal(withToken(token), settings({ machineIsLive: () => Promise.resolve(false) }));
  assert.equal(dead.code, "machine_token_revoked");
});

stackTest("auth: wrong key, unknown kid, alg none, expired and legacy HS256 tokens are 401", async () => {
  const realKid = (await mintJwt({ role: "authenticated", sub: USER })).split(".")[0];
  const kid = JSON.parse(atob(realKid.replace(/-/g, "+").replace(/_/g, "/"))).kid;
  const none = `${btoa(JSON.stringify({ alg: "none", typ: "JWT" }))}.${btoa(JSON.stringify({ role: "service_role" }))}.`;
  const cases: [string, string][] = [
    [await mintJwt({ role: "authenticated", sub: USER }, { key: await untrustedKey(kid) }), "invalid JWT signature"],
    [await mintJwt({ role: "authenticated", sub: USER }, { key: await untrustedKey() }), "JWT signed with an unknown key (kid)"],
    [none.replace(/=/g, ""), "unsupported JWT algorithm none"],
    [await mintJwt({ role: "authenticated", sub: USER }, { validForSecs: -120 }), "JWT expired"],
    [await mintJwt({ role: "authenticated", sub: USER }, { alg: "HS256" }), "legacy HS256 JWTs are not accepted: sign in again for a session signed with the project's keys"],
    ["not-a-jwt", "malformed JWT"],
    [await mintJwt({ role: "authenticated" }), "authenticated JWTs must carry 'sub'"],
    [await mintJwt({ role: "trader_machine", sub: USER }), "trader_machine JWTs must carry 'machine_id'"],
    [await mintJwt({ role: "postgres", sub: USER }), "unknown role 'postgres' in JWT"],
  ];
  for (const [token, message] of cases) assert.equal((await refusal(withToken(token))).message, message);
  assert.equal((await refusal(withToken(null))).code, "missing_authorization");
});

stackTest("auth: legacy HS256 is accepted once an operator configures LEGACY_JWT_SECRET", async () => {
  const token = await mintJwt({ role: "authenticated", sub: USER }, { alg: "HS256" });
  const caller = await authenticate(withToken(token), settings({ legacySecret: LEGACY_JWT_SECRET }));
  assert.equal(caller.userId, USER);
  const forged = await mintJwt({ role: "authenticated", sub: USER }, { alg: "HS256", secret: "x".repeat(40) });
  assert.equal((await refusal(withToken(forged), settings({ legacySecret: LEGACY_JWT_SECRET }))).message, "invalid JWT signature");
});

stackTest("auth: a kid the JWKS did not hold is fetched again", async () => {
  const first = await untrustedKey();
  const second = await untrustedKey();
  const publicOf = (key: Record<string, unknown>) => {
    const { d: _d, ...rest } = key;
    return { ...rest, alg: "ES256", use: "sig", key_ops: ["verify"] };
  };
  let served = [publicOf(first)];
  let fetches = 0;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, () => {
    fetches++;
    return Response.json({ keys: served });
  });
  try {
    const url = `http://127.0.0.1:${server.addr.port}/auth/v1/.well-known/jwks.json`;
    const options = settings({ jwksUrl: url, inlineJwks: null, jwksCooldownMs: 0 });
    await authenticate(withToken(await mintJwt({ role: "authenticated", sub: USER }, { key: first })), options);
    served = [publicOf(first), publicOf(second)];
    await authenticate(withToken(await mintJwt({ role: "authenticated", sub: USER }, { key: second })), options);
    await authenticate(withToken(await mintJwt({ role: "authenticated", sub: USER }, { key: first })), options);
    assert.equal(fetches, 2); // cached, and fetched again only for the kid it did not know
  } finally {
    await server.shutdown();
  }
});

Deno.test("auth: requireRole refuses other roles with 403", () => {
  const caller = { role: "authenticated" as const, userId: USER, machineId: null };
  assert.throws(() => requireRole(caller, ["trader_machine"], "analyze signals"), (e: HttpError) => e.status === 403);
  requireRole(caller, ["authenticated"], "generate strategies");
});
