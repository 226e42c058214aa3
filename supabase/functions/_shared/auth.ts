// Who is calling. Every function verifies its caller itself, as Supabase's "Securing Edge Functions" guide
// recommends for projects on JWT signing keys (config.toml sets verify_jwt = false for them):
//   - the project's API keys, compared with the values the platform injects (SUPABASE_SERVICE_ROLE_KEY /
//     SUPABASE_ANON_KEY, and the new sb_secret_/sb_publishable_ keys in SUPABASE_SECRET_KEYS /
//     SUPABASE_PUBLISHABLE_KEYS);
//   - asymmetric JWTs (ES256/RS256: user sessions, machine tokens) against the project's JWKS: SUPABASE_JWKS
//     when the platform provides it, else `${SUPABASE_URL}/auth/v1/.well-known/jwks.json`, cached and
//     fetched again when a token names a kid it does not hold (jose's remote key set);
//   - legacy HS256 JWTs only when an operator set LEGACY_JWT_SECRET (a name `supabase secrets set` accepts;
//     hosted projects give functions no JWT secret, and no function reads one under a reserved name).
// A trader_machine token is also checked against its machine row: live, and the token's generation the
// row's current one, so a destroyed or replaced machine's token is refused at once.
import { createLocalJWKSet, createRemoteJWKSet, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload } from "npm:jose@6.2.19";
import { HttpError } from "./http.ts";
import { serviceClient } from "./supabase.ts";

export type Role = "anon" | "authenticated" | "trader_machine" | "service_role";

export interface Caller {
  role: Role;
  /** The user the token acts for (JWT `sub`); null only for anon and service_role. */
  userId: string | null;
  /** The Fly machine a trader_machine token was minted for. */
  machineId: string | null;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ROLES: ReadonlySet<string> = new Set(["anon", "authenticated", "trader_machine", "service_role"]);
const ASYMMETRIC = new Set(["ES256", "RS256"]);
// PostgREST's allowance for clock differences between issuer and verifier.
const CLOCK_TOLERANCE_SECS = 30;

export function isUuid(value: unknown): value is string {
  return typeof value === "string" && UUID.test(value);
}

function unauthorized(message: string, code = "invalid_jwt"): HttpError {
  return new HttpError(401, code, message, { "WWW-Authenticate": "Bearer" });
}

// Key sets -----------------------------------------------------------------------------------------------
type KeySet = ReturnType<typeof createRemoteJWKSet>;
const remoteKeySets = new Map<string, KeySet>();
const localKeySets = new Map<string, ReturnType<typeof createLocalJWKSet>>();

/** The project's JWKS endpoint, one cached key set per URL (jose caches 10 min, refetches on an unknown kid). */
export function remoteKeySet(url: string, cooldownMs = 30_000): KeySet {
  let keySet = remoteKeySets.get(url);
  if (!keySet) {
    keySet = createRemoteJWKSet(new URL(url), { cooldownDuration: cooldownMs, cacheMaxAge: 600_000, timeoutDuration: 5_000 });
    remoteKeySets.set(url, keySet);
  }
  return keySet;
}

function localKeySet(json: string): ReturnType<typeof createLocalJWKSet> | null {
  let keySet = localKeySets.get(json);
  if (!keySet) {
    try {
      const parsed = JSON.parse(json);
      keySet = createLocalJWKSet(Array.isArray(parsed) ? { keys: parsed } : parsed);
    } catch {
      return null;
    }
    localKeySets.set(json, keySet);
  }
  return keySet;
}

export interface AuthSettings {
  supabaseUrl: string;
  jwksUrl: string;
  /** SUPABASE_JWKS (inline JSON), when the platform provides it. */
  inlineJwks: string | null;
  /** API keys by the role they act as. */
  apiKeys: Map<string, Role>;
  legacySecret: string | null;
  serviceRoleKey: string;
  /** How soon after a fetch an unknown kid may fetch the JWKS again (jose's cooldown; tests use 0). */
  jwksCooldownMs?: number;
  /** Whether a trader_machine token's machine is live; defaults to a look-up of its fly_machines row. */
  machineIsLive?: (userId: string, machineId: string, generation: unknown) => Promise<boolean>;
}

function namedKeys(variable: string): string[] {
  const raw = Deno.env.get(variable);
  if (!raw) return [];
  try {
    const parsed = JSON.parse(raw);
    return Object.values(parsed).filter((value): value is string => typeof value === "string" && value.length > 0);
  } catch {
    return [];
  }
}

export function authSettingsFromEnv(): AuthSettings {
  const supabaseUrl = (Deno.env.get("SUPABASE_URL") ?? "").replace(/\/+$/, "");
  if (!supabaseUrl) throw new HttpError(500, "misconfigured", "SUPABASE_URL is not set");
  const serviceRoleKey = Deno.env.get("SUPABASE_SERVICE_ROLE_KEY") ?? "";
  const apiKeys = new Map<string, Role>();
  for (const key of namedKeys("SUPABASE_PUBLISHABLE_KEYS")) apiKeys.set(key, "anon");
  for (const key of namedKeys("SUPABASE_SECRET_KEYS")) apiKeys.set(key, "service_role");
  const anonKey = Deno.env.get("SUPABASE_ANON_KEY");
  if (anonKey) apiKeys.set(anonKey, "anon");
  if (serviceRoleKey) apiKeys.set(serviceRoleKey, "service_role");
  return {
    supabaseUrl,
    jwksUrl: `${supabaseUrl}/auth/v1/.well-known/jwks.json`,
    inlineJwks: Deno.env.get("SUPABASE_JWKS") || null,
    apiKeys,
    legacySecret: Deno.env.get("LEGACY_JWT_SECRET") || null,
    serviceRoleKey,
  };
}

/** Compare secrets without leaking where they differ through timing. */
export function constantTimeEqual(a: string, b: string): boolean {
  const left = new TextEncoder().encode(a);
  const right = new TextEncoder().encode(b);
  let difference = left.length ^ right.length;
  for (let i = 0; i < Math.max(left.length, right.length); i++) difference |= (left[i] ?? 0) ^ (right[i] ?? 0);
  return difference === 0;
}

function apiKeyRole(settings: AuthSettings, presented: string): Role | null {
  for (const [key, role] of settings.apiKeys) if (constantTimeEqual(key, presented)) return role;
  return null;
}

// Verification -------------------------------------------------------------------------------------------
async function verifyAsymmetric(token: string, settings: AuthSettings, nowMs: number): Promise<JWTPayload> {
  const options = { algorithms: [...ASYMMETRIC], clockTolerance: CLOCK_TOLERANCE_SECS, currentDate: new Date(nowMs) };
  const inline = settings.inlineJwks ? localKeySet(settings.inlineJwks) : null;
  if (inline) {
    try {
      return (await jwtVerify(token, inline, options)).payload;
    } catch (error) {
      // A kid the injected set does not hold yet (a key created since): ask the discovery endpoint.
      if (!(error instanceof joseErrors.JWKSNoMatchingKey)) throw error;
    }
  }
  return (await jwtVerify(token, remoteKeySet(settings.jwksUrl, settings.jwksCooldownMs), options)).payload;
}

async function verifyLegacy(token: string, secret: string, nowMs: number): Promise<JWTPayload> {
  const key = new TextEncoder().encode(secret);
  return (await jwtVerify(token, key, { algorithms: ["HS256"], clockTolerance: CLOCK_TOLERANCE_SECS, currentDate: new Date(nowMs) })).payload;
}

function describeFailure(error: unknown): string {
  if (error instanceof joseErrors.JWTExpired) return "JWT expired";
  if (error instanceof joseErrors.JWKSNoMatchingKey) return "JWT signed with an unknown key (kid)";
  if (error instanceof joseErrors.JWSSignatureVerificationFailed) return "invalid JWT signature";
  if (error instanceof joseErrors.JWTClaimValidationFailed) return `JWT claim '${error.claim}' is not valid`;
  if (error instanceof joseErrors.JWKSTimeout || error instanceof joseErrors.JOSEError && error.code === "ERR_JWKS_INVALID") {
    return "the project's signing keys could not be fetched";
  }
  return "malformed JWT";
}

async function defaultMachineIsLive(userId: string, machineId: string, generation: unknown): Promise<boolean> {
  const url = Deno.env.get("SUPABASE_URL") ?? "";
  const serviceRoleKey = Deno.env.get("SUPABASE_SERVICE_ROLE_KEY") ?? "";
  const { data, error } = await serviceClient({ url, serviceRoleKey })
    .from("fly_machines")
    .select("token_generation")
    .eq("machine_id", machineId)
    .eq("user_id", userId)
    .neq("status", "destroyed")
    .maybeSingle();
  if (error) throw new Error(`checking the machine row failed: ${error.code} ${error.message}`);
  return data !== null && data.token_generation === generation;
}

/** Verify the request's credential and return the caller; 401 JSON when it is missing or not valid. */
export async function authenticate(req: Request, settings = authSettingsFromEnv(), nowMs = Date.now()): Promise<Caller> {
  const authorization = req.headers.get("authorization") ?? "";
  const bearer = /^bearer\s+/i.test(authorization) ? authorization.replace(/^bearer\s+/i, "").trim() : "";
  const apikey = req.headers.get("apikey") ?? "";
  // An API key (legacy JWT key or sb_ key) in Authorization, or an sb_ key alone in apikey.
  const keyRole = bearer ? apiKeyRole(settings, bearer) : apikey.startsWith("sb_") ? apiKeyRole(settings, apikey) : null;
  if (keyRole) return { role: keyRole, userId: null, machineId: null };
  if (!bearer) throw unauthorized("missing 'Authorization: Bearer <jwt>' header", "missing_authorization");
  if (bearer.startsWith("sb_")) throw unauthorized("unknown API key");

  let algorithm: unknown;
  try {
    algorithm = decodeProtectedHeader(bearer).alg;
  } catch {
    throw unauthorized("malformed JWT");
  }
  let claims: JWTPayload;
  try {
    if (typeof algorithm === "string" && ASYMMETRIC.has(algorithm)) {
      claims = await verifyAsymmetric(bearer, settings, nowMs);
    } else if (algorithm === "HS256" && settings.legacySecret) {
      claims = await verifyLegacy(bearer, settings.legacySecret, nowMs);
    } else if (algorithm === "HS256") {
      throw unauthorized("legacy HS256 JWTs are not accepted: sign in again for a session signed with the project's keys");
    } else {
      throw unauthorized(`unsupported JWT algorithm ${String(algorithm)}`);
    }
  } catch (error) {
    if (error instanceof HttpError) throw error;
    throw unauthorized(describeFailure(error));
  }

  const role = typeof claims.role === "string" ? claims.role : "anon";
  if (!ROLES.has(role)) throw unauthorized(`unknown role '${role}' in JWT`);
  const userId = claims.sub === undefined ? null : claims.sub;
  if (userId !== null && !isUuid(userId)) throw unauthorized("JWT 'sub' is not a user id");
  if ((role === "authenticated" || role === "trader_machine") && userId === null) {
    throw unauthorized(`${role} JWTs must carry 'sub'`);
  }
  const machineId = typeof claims.machine_id === "string" ? claims.machine_id : null;
  if (role === "trader_machine") {
    if (machineId === null) throw unauthorized("trader_machine JWTs must carry 'machine_id'");
    const isLive = settings.machineIsLive ?? defaultMachineIsLive;
    if (!await isLive(userId as string, machineId, claims.machine_gen)) {
      throw unauthorized("machine token revoked: the machine was destroyed or replaced", "machine_token_revoked");
    }
  }
  return { role: role as Role, userId: userId as string | null, machineId };
}

/** 403 unless the caller has one of `roles`. */
export function requireRole(caller: Caller, roles: readonly Role[], action: string): void {
  if (!roles.includes(caller.role)) {
    throw new HttpError(403, "forbidden", `role '${caller.role}' may not ${action}; allowed: ${roles.join(", ")}`);
  }
}
