// machine-token: a worker machine renews its trader_machine JWT. It presents its machine credential
// (`Authorization: Bearer <MACHINE_CREDENTIAL>`, body `{machineId}`); the credential is derived from the
// machine id and the row's current token generation, so only a live machine at its current version gets a
// token, one hour at most. A destroyed or replaced machine (and anyone guessing) gets the same 401.
import { constantTimeEqual, isUuid } from "../_shared/auth.ts";
import { HttpError, invalidBody, jsonResponse, postHandler, readJsonObject } from "../_shared/http.ts";
import { machineCredential, mintMachineToken } from "../_shared/machine_tokens.ts";
import { lifecycleEnv, PENDING_PREFIX } from "../_shared/machines.ts";
import { serviceClient } from "../_shared/supabase.ts";

const MAX_BODY_BYTES = 1024;
const MACHINE_ID = /^[a-zA-Z0-9_-]{1,64}$/;

function refused(): HttpError {
  return new HttpError(401, "machine_credential_refused", "the machine credential is not valid for a live machine", {
    "WWW-Authenticate": "Bearer",
  });
}

export const handler = postHandler("machine-token", async (req) => {
  const env = lifecycleEnv();
  const authorization = req.headers.get("authorization") ?? "";
  if (!/^bearer\s+\S+/i.test(authorization)) {
    throw new HttpError(401, "missing_authorization", "missing 'Authorization: Bearer <machine credential>' header", {
      "WWW-Authenticate": "Bearer",
    });
  }
  const credential = authorization.replace(/^bearer\s+/i, "").trim();
  const body = await readJsonObject(req, MAX_BODY_BYTES);
  const unknown = Object.keys(body).filter((key) => key !== "machineId");
  if (unknown.length) throw invalidBody(`unknown field(s): ${unknown.join(", ")}; expected machineId`);
  if (typeof body.machineId !== "string" || !MACHINE_ID.test(body.machineId) || body.machineId.startsWith(PENDING_PREFIX)) {
    throw invalidBody("machineId must be a Fly machine id");
  }
  const machineId = body.machineId;
  const { data: row, error } = await serviceClient(env.supabase)
    .from("fly_machines")
    .select("user_id, token_generation")
    .eq("machine_id", machineId)
    .neq("status", "destroyed")
    .maybeSingle();
  if (error) throw new Error(`reading fly_machines failed: ${error.code} ${error.message}`);
  if (!row || !isUuid(row.user_id)) throw refused();
  const expected = await machineCredential(env.machineSecretKey, machineId, row.token_generation);
  if (!constantTimeEqual(expected, credential)) throw refused();
  const nowSecs = Math.floor(Date.now() / 1000);
  const token = await mintMachineToken(env.machineSigningKey, {
    userId: row.user_id,
    machineId,
    generation: row.token_generation,
    issuer: env.jwtIssuer,
    nowSecs,
    ttlSecs: env.tokenTtlSecs,
  });
  return jsonResponse({
    token,
    tokenType: "bearer",
    expiresAt: new Date((nowSecs + env.tokenTtlSecs) * 1000).toISOString(),
    expiresInSecs: env.tokenTtlSecs,
    generation: row.token_generation,
  });
});
