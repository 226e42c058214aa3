// JWT verification in the functions: signature, expiry, algorithm, role claims.
import assert from "node:assert/strict";
import { authenticate, requireRole } from "../_shared/auth.ts";
import { HttpError } from "../_shared/http.ts";
import { env, mintJwt } from "./helpers.ts";

const SECRET = env("SUPABASE_JWT_SECRET");
const USER = "00000000-0000-4000-8000-0000000000aa";

function withToken(token: string | null): Request {
  return new Request("http://local/x", { headers: token === null ? {} : { authorization: `Bearer ${token}` } });
}

async function refusal(request: Request): Promise<HttpError> {
  const error = await authenticate(request, SECRET).catch((e) => e);
  assert.ok(error instanceof HttpError, String(error));
  return error;
}

Deno.test("auth: a valid user token yields the caller", async () => {
  const caller = await authenticate(withToken(await mintJwt({ role: "authenticated", sub: USER })), SECRET);
  assert.deepEqual(caller, { role: "authenticated", userId: USER, machineId: null });
});

Deno.test("auth: a machine token carries its machine id", async () => {
  const token = await mintJwt({ role: "trader_machine", sub: USER, machine_id: "m1" });
  assert.deepEqual(await authenticate(withToken(token), SECRET), { role: "trader_machine", userId: USER, machineId: "m1" });
});

Deno.test("auth: missing, forged, expired and malformed tokens are 401", async () => {
  const cases: [Request, string][] = [
    [withToken(null), "missing 'Authorization: Bearer <jwt>' header"],
    [withToken(await mintJwt({ role: "authenticated", sub: USER }, { secret: "another-secret-of-at-least-32-characters" })), "invalid JWT signature"],
    [withToken(await mintJwt({ role: "authenticated", sub: USER }, { validForSecs: -10 })), "JWT expired"],
    [withToken("not-a-jwt"), "malformed JWT"],
    [withToken(await mintJwt({ role: "authenticated", sub: USER }, { alg: "HS512" })), "unsupported JWT algorithm HS512"],
    [withToken(await mintJwt({ role: "authenticated" })), "authenticated JWTs must carry 'sub'"],
    [withToken(await mintJwt({ role: "trader_machine", sub: USER })), "trader_machine JWTs must carry 'machine_id'"],
    [withToken(await mintJwt({ role: "postgres", sub: USER })), "unknown role 'postgres' in JWT"],
  ];
  for (const [request, message] of cases) {
    const error = await refusal(request);
    assert.equal(error.status, 401, message);
    assert.equal(error.message, message);
  }
});

Deno.test("auth: requireRole refuses other roles with 403", () => {
  const caller = { role: "authenticated" as const, userId: USER, machineId: null };
  assert.throws(() => requireRole(caller, ["trader_machine"], "analyze signals"), (e: HttpError) => e.status === 403);
  requireRole(caller, ["authenticated"], "generate strategies");
});
