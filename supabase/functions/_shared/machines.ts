// What the lifecycle functions share: their environment, who may act for whom, the machine config a user
// gets, the fly_machines rows, and calls to a machine's own HTTP API.
//
// Hosted Edge Functions are outside Fly's private network, so they reach a machine the way Fly documents for
// that ("Connecting to User Machines", dynamic request routing): the app's public hostname
// (MACHINE_BASE_URL, default https://<app>.fly.dev) with `fly-force-instance-id: <machine id>`, which Fly's
// proxy delivers to that machine only, through the HTTP service in its config. Callers inside Fly's private
// network may set MACHINE_URL_TEMPLATE (e.g. http://{machine_id}.vm.{app}.internal:8080) instead.
import type { SupabaseClient } from "npm:@supabase/supabase-js@2.119.0";
import type { Caller } from "./auth.ts";
import { isUuid } from "./auth.ts";
import { optionalEnv, positiveIntEnv, requireEnv, type SupabaseEnv, supabaseEnv } from "./env.ts";
import { type FlyEnv, flyEnv, imageTag, type MachineConfig } from "./fly.ts";
import { HttpError, invalidBody } from "./http.ts";
import { machineApiSecret, machineCredential, MAX_MACHINE_TOKEN_TTL_SECS, mintMachineToken } from "./machine_tokens.ts";
import runtimeJson from "./machine_runtime.json" with { type: "json" };
import { serviceClient } from "./supabase.ts";

// Machine size by subscription tier; free users get no machine.
export const MEMORY_MB_BY_TIER: Readonly<Record<string, number>> = runtimeJson.memoryMbByTier;
// Rows whose machine_id is this prefix are claims taken before Fly assigned an id (see provision-machine).
export const PENDING_PREFIX = "pending-";

export interface LifecycleEnv {
  supabase: SupabaseEnv;
  anonKey: string;
  fly: FlyEnv;
  workerImage: string;
  machineRoute: MachineRoute;
  /** The operator's ES256 private JWK the project trusts (imported as a JWT signing key). */
  machineSigningKey: string;
  machineSecretKey: string;
  jwtIssuer: string;
  tokenTtlSecs: number;
  workerSupabaseUrl: string;
  workerEnv: Record<string, string>;
}

/** How a machine's HTTP API is reached: Fly's public edge with the routing header, or a private address. */
export type MachineRoute = { kind: "edge"; baseUrl: string | null } | { kind: "private"; urlTemplate: string };

function machineRouteFromEnv(): MachineRoute {
  const urlTemplate = Deno.env.get("MACHINE_URL_TEMPLATE");
  if (urlTemplate) return { kind: "private", urlTemplate };
  return { kind: "edge", baseUrl: Deno.env.get("MACHINE_BASE_URL")?.replace(/\/+$/, "") || null };
}

export function lifecycleEnv(): LifecycleEnv {
  const supabase = supabaseEnv();
  const workerEnv: Record<string, string> = { LOG_LEVEL: optionalEnv("WORKER_LOG_LEVEL", "info") };
  const binanceBaseUrl = Deno.env.get("WORKER_BINANCE_BASE_URL");
  if (binanceBaseUrl) workerEnv.BINANCE_BASE_URL = binanceBaseUrl;
  const symbols = Deno.env.get("WORKER_DEFAULT_SYMBOLS");
  if (symbols) workerEnv.DEFAULT_SYMBOLS = symbols;
  const heartbeat = Deno.env.get("WORKER_HEARTBEAT_INTERVAL_SECS");
  if (heartbeat) workerEnv.HEARTBEAT_INTERVAL_SECS = heartbeat;
  return {
    supabase,
    anonKey: requireEnv("SUPABASE_ANON_KEY"),
    fly: flyEnv(),
    workerImage: requireEnv("FLY_WORKER_IMAGE"),
    machineRoute: machineRouteFromEnv(),
    machineSigningKey: requireEnv("MACHINE_SIGNING_KEY"),
    machineSecretKey: requireEnv("MACHINE_SECRET_KEY"),
    jwtIssuer: `${supabase.url.replace(/\/+$/, "")}/functions/v1/machine-token`,
    tokenTtlSecs: Math.min(positiveIntEnv("MACHINE_TOKEN_TTL_SECS", MAX_MACHINE_TOKEN_TTL_SECS), MAX_MACHINE_TOKEN_TTL_SECS),
    workerSupabaseUrl: optionalEnv("WORKER_SUPABASE_URL", supabase.url),
    workerEnv,
  };
}

// Who may act for whom ------------------------------------------------------------------------------------
/**
 * The user an operation is for. service_role (operators, other functions) names any user; an end user acts
 * only on themselves (naming another user is 403); machines and anon may not call lifecycle functions.
 */
export function targetUser(caller: Caller, requested: unknown, action: string): string {
  if (requested !== undefined && requested !== null && !isUuid(requested)) throw invalidBody("userId must be a user id (uuid)");
  if (caller.role === "service_role") {
    if (requested === undefined || requested === null) throw invalidBody("userId is required when calling as service_role");
    return requested as string;
  }
  if (caller.role === "authenticated") {
    if (requested !== undefined && requested !== null && requested !== caller.userId) {
      throw new HttpError(403, "forbidden", `a user may ${action} only their own machine`);
    }
    return caller.userId as string;
  }
  throw new HttpError(403, "forbidden", `role '${caller.role}' may not ${action}`);
}

export function rejectUnknownFields(body: Record<string, unknown>, allowed: readonly string[]): void {
  const unknown = Object.keys(body).filter((key) => !allowed.includes(key));
  if (unknown.length) throw invalidBody(`unknown field(s): ${unknown.join(", ")}; allowed: ${allowed.join(", ")}`);
}

// Rows -----------------------------------------------------------------------------------------------------
export interface MachineRow {
  id: string;
  user_id: string;
  machine_id: string;
  status: string;
  region: string | null;
  memory_mb: number | null;
  version: string | null;
  created_at: string;
  last_heartbeat: string | null;
}

export const MACHINE_COLUMNS = "id, user_id, machine_id, status, region, memory_mb, version, created_at, last_heartbeat";

export async function liveMachineRow(db: SupabaseClient, userId: string): Promise<MachineRow | null> {
  const { data, error } = await db
    .from("fly_machines")
    .select(MACHINE_COLUMNS)
    .eq("user_id", userId)
    .neq("status", "destroyed")
    .maybeSingle();
  if (error) throw new Error(`reading fly_machines failed: ${error.code} ${error.message}`);
  return data as MachineRow | null;
}

export async function markDestroyed(db: SupabaseClient, rowId: string, errorMessage: string | null = null): Promise<void> {
  const { error } = await db
    .from("fly_machines")
    .update({ status: "destroyed", destroyed_at: new Date().toISOString(), error_message: errorMessage })
    .eq("id", rowId);
  if (error) throw new Error(`marking the machine destroyed failed: ${error.code} ${error.message}`);
}

/** The user's open positions and watching signals as the database holds them (when the machine cannot say). */
export async function databaseFinalState(db: SupabaseClient, userId: string): Promise<{ openPositions: number; watchingSignals: number }> {
  const positions = await db.from("positions").select("id", { count: "exact", head: true }).eq("user_id", userId).eq("status", "open");
  if (positions.error) throw new Error(`counting positions failed: ${positions.error.message}`);
  const signals = await db.from("signals").select("id", { count: "exact", head: true }).eq("user_id", userId).eq("status", "watching");
  if (signals.error) throw new Error(`counting signals failed: ${signals.error.message}`);
  return { openPositions: positions.count ?? 0, watchingSignals: signals.count ?? 0 };
}

// Machine config -------------------------------------------------------------------------------------------
export interface UserForMachine {
  id: string;
  tier: string;
  preferred_region: string;
  real_trading_enabled: boolean;
}

/** The worker's environment for one machine version: identity, keys, and the credential of `generation`. */
export async function machineEnv(
  env: LifecycleEnv,
  user: UserForMachine,
  machineId: string,
  generation: number,
  binanceKeys: { apiKey: string; secretKey: string } | null,
): Promise<Record<string, string>> {
  const values: Record<string, string> = {
    ...env.workerEnv,
    USER_ID: user.id,
    MACHINE_ID: machineId,
    SUPABASE_URL: env.workerSupabaseUrl,
    SUPABASE_ANON_KEY: env.anonKey,
    ...await machineIdentityEnv(env, user.id, machineId, generation),
    MACHINE_API_SECRET: await machineApiSecret(env.machineSecretKey, user.id),
    PAPER_TRADING_ONLY: user.real_trading_enabled ? "false" : "true",
    // What /health reports; rollouts wait for it. Fly gives the image only as FLY_IMAGE_REF.
    VERSION: imageTag(env.workerImage),
  };
  if (binanceKeys) {
    values.BINANCE_API_KEY = binanceKeys.apiKey;
    values.BINANCE_API_SECRET = binanceKeys.secretKey;
  }
  return values;
}

/** What proves a machine version's identity: its renewal credential and a first token (both of `generation`). */
export async function machineIdentityEnv(
  env: LifecycleEnv,
  userId: string,
  machineId: string,
  generation: number,
): Promise<Record<string, string>> {
  return {
    MACHINE_CREDENTIAL: await machineCredential(env.machineSecretKey, machineId, generation),
    MACHINE_TOKEN: await mintMachineToken(env.machineSigningKey, {
      userId,
      machineId,
      generation,
      issuer: env.jwtIssuer,
      ttlSecs: env.tokenTtlSecs,
    }),
  };
}

/** Replace a machine's identity: the row's token generation moves on, which refuses every token and credential
 * of the previous one at once (PostgREST, Realtime, functions); returns the new version's identity env. */
export async function replaceMachineIdentity(env: LifecycleEnv, userId: string, machineId: string): Promise<Record<string, string>> {
  return await machineIdentityEnv(env, userId, machineId, await nextMachineGeneration(env, machineId));
}

/** Move the machine row's token generation on (refusing the current version's identity); the new one. */
export async function nextMachineGeneration(env: LifecycleEnv, machineId: string): Promise<number> {
  const { data, error } = await serviceClient(env.supabase).rpc("next_machine_token_generation", { machine_id: machineId });
  if (error) throw new Error(`moving the machine's token generation on failed: ${error.code} ${error.message}`);
  if (typeof data !== "number") throw new Error(`machine ${machineId} has no live row to give a new identity`);
  return data;
}

/**
 * The user's machine config: image, env, size and metadata per user, every runtime setting from
 * machine_runtime.json. That file is the one source: fly.toml mirrors it and tests/test_deploy_files.py
 * fails when they drift. Why these values:
 * - restart on-failure x10, not always: exit 0 means the worker was told to stop, and a worker whose row is
 *   gone (exit 78) must not restart forever; crashes and kills are restarted.
 * - stop_config 35 s: the worker finishes in-flight work within 30 s of SIGTERM.
 * - checks.health grace 30 s: a cold worker backfills its symbols before /health passes (the image's
 *   HEALTHCHECK start period is the same).
 * - one HTTP service on 443 for the lifecycle functions (https://<app>.fly.dev + fly-force-instance-id);
 *   Fly's proxy never starts or stops a worker (autostart false, autostop off): provision, destroy and the
 *   restart policy own its lifecycle.
 */
export function machineConfig(env: LifecycleEnv, user: UserForMachine, workerEnv: Record<string, string>): MachineConfig {
  const memoryMb = MEMORY_MB_BY_TIER[user.tier];
  if (!memoryMb) throw new HttpError(403, "tier_not_eligible", `the ${user.tier} tier has no worker machine; upgrade to pro or above`);
  return withRuntimeSettings({
    image: env.workerImage,
    env: workerEnv,
    guest: { memory_mb: memoryMb },
    metadata: { trademind_user_id: user.id, trademind_tier: user.tier },
  });
}

/** `config` with every runtime setting as machine_runtime.json has it now; the machine keeps its size (CPUs
 * and memory: its tier's, or what scale-machines gave it). */
export function withRuntimeSettings(config: MachineConfig): MachineConfig {
  const runtime = structuredClone(runtimeJson.config);
  const guest = { ...runtime.guest, cpus: config.guest?.cpus ?? runtime.guest.cpus, memory_mb: config.guest?.memory_mb };
  return { ...config, ...runtime, guest };
}

export async function decryptBinanceKeys(db: SupabaseClient, userId: string): Promise<{ apiKey: string; secretKey: string } | null> {
  const { data, error } = await db.rpc("decrypt_binance_keys", { user_id: userId });
  // Never include the error's details: they could echo the arguments, never the keys, but stay terse.
  if (error) throw new Error(`decrypt_binance_keys failed: ${error.code}`);
  const rows = (data ?? []) as { api_key: string; secret_key: string }[];
  return rows.length ? { apiKey: rows[0].api_key, secretKey: rows[0].secret_key } : null;
}

// The machine's own HTTP API -------------------------------------------------------------------------------
export interface MachineAnswer {
  status: number;
  body: Record<string, unknown> | null;
}

/** The machine could not be reached at all (not running, no route, timeout). */
export class MachineUnreachable extends Error {
  constructor(readonly machineId: string, reason: string) {
    super(`machine ${machineId} unreachable: ${reason}`);
    this.name = "MachineUnreachable";
  }
}

/** The URL and routing headers of a request to `path` on one machine's HTTP API. */
export function machineTarget(route: MachineRoute, app: string, machineId: string, path: string): { url: string; headers: Record<string, string> } {
  const tail = path.replace(/^\/+/, "");
  if (route.kind === "private") {
    const base = route.urlTemplate.replaceAll("{machine_id}", encodeURIComponent(machineId)).replaceAll("{app}", encodeURIComponent(app));
    return { url: `${base.replace(/\/+$/, "")}/${tail}`, headers: {} };
  }
  const base = route.baseUrl ?? `https://${app}.fly.dev`;
  return { url: `${base}/${tail}`, headers: { "fly-force-instance-id": machineId } };
}

export async function callMachine(
  env: LifecycleEnv,
  machineId: string,
  path: string,
  { method = "GET", userId, body, timeoutMs = 5000 }: { method?: string; userId?: string; body?: unknown; timeoutMs?: number } = {},
): Promise<MachineAnswer> {
  const target = machineTarget(env.machineRoute, env.fly.app, machineId, path);
  const headers: Record<string, string> = { ...target.headers, accept: "application/json" };
  if (userId) headers.authorization = `Bearer ${await machineApiSecret(env.machineSecretKey, userId)}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(target.url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (error) {
    throw new MachineUnreachable(machineId, (error as Error).name === "TimeoutError" ? "timed out" : (error as Error).message);
  }
  const text = await response.text();
  let parsed: Record<string, unknown> | null = null;
  try {
    const value = JSON.parse(text);
    if (value && typeof value === "object" && !Array.isArray(value)) parsed = value;
  } catch { /* not JSON */ }
  // The worker always answers JSON; a 5xx without it is Fly's proxy saying the machine cannot be reached
  // (not found, not started, refused), which it answers with no body of its own.
  if (response.status >= 500 && parsed === null) {
    throw new MachineUnreachable(machineId, `HTTP ${response.status} from Fly's proxy (request ${response.headers.get("fly-request-id") ?? "?"})`);
  }
  return { status: response.status, body: parsed };
}

/** Run `fn` over `items` with at most `limit` in flight, keeping the input order in the result. */
export async function mapLimited<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]);
    }
  });
  await Promise.all(workers);
  return results;
}

export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
