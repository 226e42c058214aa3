// scale-machines: size every running worker machine (or the listed users') by its load, operators only
// (pg_cron calls it every minute). Each worker's /metrics `load` (sweep duration against its interval, CPU,
// memory against the machine's, and the sweeps its traders are predicted to take) gives a target size within
// the user's tier (sizing.ts). A resize is taken in the database first (begin_machine_resize: none within
// `cooldownSecs`, default 5 minutes, none while another is in flight), then made like an update
// (machine_change.ts): Fly lease, /prepare-shutdown, the config fresh from Fly with the new guest size, the
// new version started and healthy, else the previous config back under the same lease. finish_machine_resize
// records the outcome (applied: the row's size, billing and the user's notification follow).
//
// A worker machine may call it too, with an empty body and its own token: its trader sync saw new traders
// and holds them until it knows whether they will run here or on a bigger machine. It gets its own machine
// evaluated at once, exactly as pg_cron's run would (the operator's cooldown and gate, the tier's bounds, the
// size decided from the load its /metrics reports); it cannot name a user, a size, a cooldown or a timeout,
// and it may ask once per SIZING_REQUEST_INTERVAL_SECS (claim_machine_sizing; 429 with Retry-After). A
// resize restarts the caller, so the answer comes first (202, "resizing") and the resize runs after it
// (EdgeRuntime.waitUntil, Supabase's background tasks): the restarted worker runs the traders it held.
import type { SupabaseClient } from "npm:@supabase/supabase-js@2.119.0";
import { authenticate, type Caller, isUuid, requireRole } from "../_shared/auth.ts";
import { FlyApiError, FlyClient, imageTag, type MachineConfig } from "../_shared/fly.ts";
import { HttpError, invalidBody, jsonResponse, postHandler, readJsonObject } from "../_shared/http.ts";
import {
  applyAndGate,
  type Gate,
  LEASE_TTL_SECS,
  prepareShutdown,
  rollBack,
  type RollbackResult,
  stage,
  StageError,
} from "../_shared/machine_change.ts";
import {
  callMachine,
  lifecycleEnv,
  type LifecycleEnv,
  MACHINE_COLUMNS,
  type MachineRow,
  MachineUnreachable,
  mapLimited,
  replaceMachineIdentity,
  rejectUnknownFields,
} from "../_shared/machines.ts";
import { serviceClient } from "../_shared/supabase.ts";
import { decideSize, type Load, type Size } from "./sizing.ts";

const MAX_BODY_BYTES = 16 * 1024;
const CONCURRENCY = 8;
const DEFAULT_COOLDOWN_SECS = 300;
const DEFAULT_GATE: Gate = { waitTimeoutSecs: 90, healthTimeoutSecs: 60 };
// How often one machine may have itself evaluated (pg_cron's minutely runs are not counted).
export const SIZING_REQUEST_INTERVAL_SECS = 30;

interface ScaleRequest {
  userIds: string[] | null;
  dryRun: boolean;
  cooldownSecs: number;
  gate: Gate;
}

// "resizing": a resize of the machine is under way (begun for the calling machine, answered before it runs).
type Outcome = "resized" | "resizing" | "unchanged" | "cooldown" | "rolled_back" | "failed" | "unreachable" | "planned";

interface MachineResult {
  machineId: string;
  userId: string;
  tier: string;
  status: Outcome;
  from: Size;
  to?: Size;
  reason: string;
  load?: Load;
  stage?: string;
  error?: string;
  rollback?: RollbackResult;
}

type Row = MachineRow & { cpus: number; users: { tier: string } | null };

function intField(body: Record<string, unknown>, name: string, fallback: number, min: number, max: number): number {
  const value = body[name] === undefined ? fallback : body[name];
  if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) {
    throw invalidBody(`${name} must be an integer between ${min} and ${max}`);
  }
  return value as number;
}

function parseRequest(body: Record<string, unknown>): ScaleRequest {
  rejectUnknownFields(body, ["userIds", "dryRun", "cooldownSecs", "waitTimeoutSecs", "healthTimeoutSecs"]);
  const { userIds, dryRun = false } = body;
  if (userIds !== undefined && (!Array.isArray(userIds) || !userIds.length || !userIds.every(isUuid))) {
    throw invalidBody("userIds must be a non-empty list of user ids");
  }
  if (typeof dryRun !== "boolean") throw invalidBody("dryRun must be a boolean");
  return {
    userIds: (userIds as string[] | undefined) ?? null,
    dryRun,
    cooldownSecs: intField(body, "cooldownSecs", DEFAULT_COOLDOWN_SECS, 0, 86_400),
    gate: {
      waitTimeoutSecs: intField(body, "waitTimeoutSecs", DEFAULT_GATE.waitTimeoutSecs, 1, 600),
      healthTimeoutSecs: intField(body, "healthTimeoutSecs", DEFAULT_GATE.healthTimeoutSecs, 1, 600),
    },
  };
}

async function runningRows(db: SupabaseClient, userIds: string[] | null, machine?: Caller): Promise<Row[]> {
  let query = db.from("fly_machines").select(`${MACHINE_COLUMNS}, cpus, users(tier)`).eq("status", "running").order("machine_id");
  if (userIds) query = query.in("user_id", userIds);
  if (machine) query = query.eq("machine_id", machine.machineId as string).eq("user_id", machine.userId as string);
  const { data, error } = await query;
  if (error) throw new Error(`reading fly_machines failed: ${error.code} ${error.message}`);
  return data as unknown as Row[];
}

function parseLoad(body: Record<string, unknown> | null): Load | null {
  const load = body?.load as Record<string, unknown> | undefined;
  const numbers = ["sweepLoadRatio", "sweepsMissed", "cpuPercent", "cpuCount", "memoryMb"];
  if (!load || !numbers.every((name) => typeof load[name] === "number")) return null;
  return load as unknown as Load;
}

async function resize(env: LifecycleEnv, fly: FlyClient, gate: Gate, row: Row, target: Size, result: MachineResult) {
  let nonce: string | null = null;
  let previous: MachineConfig | null = null;
  let running = false;
  try {
    nonce = await stage("lease", () => fly.acquireLease(row.machine_id, LEASE_TTL_SECS, `scale-machines to ${target.cpus}x${target.memoryMb}MB`));
    const machine = await stage("lookup", () => fly.get(row.machine_id));
    if (!machine.config?.image) throw new StageError("lookup", `machine ${row.machine_id} has no config on Fly`);
    running = machine.state === "started";
    previous = machine.config;
    if (running) await prepareShutdown(env, row, "scale-machines");
    const version = imageTag(machine.config.image);
    const config: MachineConfig = {
      ...machine.config,
      guest: { ...(machine.config.guest ?? {}), cpu_kind: "shared", cpus: target.cpus, memory_mb: target.memoryMb },
      // A resized machine is a new version: a new identity (the old one's is refused from here).
      env: { ...(machine.config.env ?? {}), ...await replaceMachineIdentity(env, row.user_id, row.machine_id) },
    };
    await applyAndGate(env, fly, gate, row.machine_id, config, { version, running, nonce });
    result.status = "resized";
  } catch (error) {
    result.status = "failed";
    result.stage = error instanceof StageError ? error.stage : "update";
    result.error = (error as Error).message;
    console.error(`scale-machines: machine_id=${row.machine_id} failed at ${result.stage}: ${result.error}`);
    if (previous && nonce) {
      result.rollback = await rollBack(env, fly, gate, row, previous, { running, nonce, caller: "scale-machines" });
      if (result.rollback.status === "rolled_back") result.status = "rolled_back";
    }
  } finally {
    if (nonce) await fly.releaseLease(row.machine_id, nonce);
  }
}

/** The machine's load and the size it calls for; `to` is set when that is not its size. */
async function evaluate(env: LifecycleEnv, row: Row): Promise<MachineResult> {
  const tier = row.users?.tier ?? "free";
  const from = { cpus: row.cpus, memoryMb: row.memory_mb ?? 256 };
  const result: MachineResult = { machineId: row.machine_id, userId: row.user_id, tier, status: "unchanged", from, reason: "" };
  let load: Load | null = null;
  try {
    const answer = await callMachine(env, row.machine_id, "/metrics", { timeoutMs: 5000 });
    load = answer.status === 200 ? parseLoad(answer.body) : null;
    if (!load) result.error = `/metrics answered HTTP ${answer.status} without load figures`;
  } catch (error) {
    if (!(error instanceof MachineUnreachable)) throw error;
    result.error = error.message;
  }
  if (!load) {
    result.status = "unreachable";
    result.reason = "no load figures: the machine is left as it is";
    return result;
  }
  result.load = load;
  const decision = decideSize(tier, from, load);
  result.reason = decision.reason;
  if (decision.target) result.to = decision.target;
  return result;
}

/** Take the resize in the database: its id, or null while the cooldown holds or another is in flight. */
async function beginResize(db: SupabaseClient, row: Row, result: MachineResult, cooldownSecs: number): Promise<string | null> {
  const target = result.to as Size;
  const { data: resizeId, error } = await db.rpc("begin_machine_resize", {
    machine_row_id: row.id,
    to_cpus: target.cpus,
    to_memory_mb: target.memoryMb,
    reason: result.reason,
    cooldown_secs: cooldownSecs,
  });
  if (error) throw new Error(`begin_machine_resize failed: ${error.code} ${error.message}`);
  return resizeId as string | null;
}

async function applyResize(env: LifecycleEnv, db: SupabaseClient, fly: FlyClient, gate: Gate, row: Row, resizeId: string, result: MachineResult) {
  await resize(env, fly, gate, row, result.to as Size, result);
  const status = result.status === "resized" ? "applied" : result.status;
  const { error: finishError } = await db.rpc("finish_machine_resize", {
    resize_id: resizeId,
    status,
    error: result.error ?? null,
  });
  if (finishError) console.error(`scale-machines: finish_machine_resize failed resize_id=${resizeId}: ${finishError.message}`);
}

async function scaleOne(env: LifecycleEnv, db: SupabaseClient, fly: FlyClient, request: ScaleRequest, row: Row): Promise<MachineResult> {
  const result = await evaluate(env, row);
  if (!result.to) return result;
  if (request.dryRun) {
    result.status = "planned";
    return result;
  }
  const resizeId = await beginResize(db, row, result, request.cooldownSecs);
  if (!resizeId) {
    result.status = "cooldown";
    return result;
  }
  await applyResize(env, db, fly, request.gate, row, resizeId, result);
  return result;
}

async function resizeInFlight(db: SupabaseClient, row: Row): Promise<boolean> {
  const { data, error } = await db.from("machine_resizes").select("id").eq("fly_machine_row_id", row.id)
    .eq("status", "in_progress").limit(1);
  if (error) throw new Error(`reading machine_resizes failed: ${error.code} ${error.message}`);
  return data.length > 0;
}

/** Keep `task` running after the response (Supabase's background tasks; a plain Deno server keeps it anyway). */
function inBackground(task: Promise<unknown>): void {
  const runtime = (globalThis as { EdgeRuntime?: { waitUntil(promise: Promise<unknown>): void } }).EdgeRuntime;
  const guarded = task.catch((error) => console.error(`scale-machines: background resize failed: ${(error as Error).message}`));
  runtime?.waitUntil(guarded);
}

/** A machine asking for its own sizing: evaluated now; a resize is answered (202) before it restarts the caller. */
async function sizeCaller(env: LifecycleEnv, db: SupabaseClient, fly: FlyClient, caller: Caller): Promise<Response> {
  const [row] = await runningRows(db, null, caller);
  if (!row) throw new HttpError(409, "machine_not_running", `machine ${caller.machineId} is not running`);
  const { data: waitSecs, error } = await db.rpc("claim_machine_sizing", {
    machine_row_id: row.id,
    min_interval_secs: SIZING_REQUEST_INTERVAL_SECS,
  });
  if (error) throw new Error(`claim_machine_sizing failed: ${error.code} ${error.message}`);
  if ((waitSecs as number) > 0) {
    throw new HttpError(429, "rate_limited", `machine ${row.machine_id} was evaluated less than ${SIZING_REQUEST_INTERVAL_SECS} s ago`, {
      "Retry-After": String(waitSecs),
    });
  }
  const result = await evaluate(env, row);
  if (!result.to) {
    // A resize this machine asked for earlier may still be on its way to restart it.
    if (await resizeInFlight(db, row)) result.status = "resizing";
    return jsonResponse({ machine: result });
  }
  const resizeId = await beginResize(db, row, result, DEFAULT_COOLDOWN_SECS);
  if (!resizeId) {
    result.status = await resizeInFlight(db, row) ? "resizing" : "cooldown";
    return jsonResponse({ machine: result });
  }
  console.log(`scale-machines: machine_id=${row.machine_id} asked: resizing to ${result.to.cpus}x${result.to.memoryMb}MB (${result.reason})`);
  inBackground(applyResize(env, db, fly, DEFAULT_GATE, row, resizeId, { ...result }));
  result.status = "resizing";
  return jsonResponse({ machine: result }, 202);
}

export const handler = postHandler("scale-machines", async (req) => {
  const env = lifecycleEnv();
  const caller = await authenticate(req);
  const body = await readJsonObject(req, MAX_BODY_BYTES);
  const request = parseRequest(body);
  requireRole(caller, ["service_role", "trader_machine"], "scale machines");
  if (caller.role === "trader_machine" && Object.keys(body).length) {
    throw new HttpError(403, "forbidden", "a machine asks only for its own sizing, with an empty body: the operator's settings apply");
  }
  const db = serviceClient(env.supabase);
  const fly = new FlyClient(env.fly);
  const started = Date.now();
  try {
    if (caller.role === "trader_machine") return await sizeCaller(env, db, fly, caller);
    const rows = await runningRows(db, request.userIds);
    const machines = await mapLimited(rows, CONCURRENCY, (row) => scaleOne(env, db, fly, request, row));
    const count = (status: Outcome) => machines.filter((machine) => machine.status === status).length;
    return jsonResponse({
      dryRun: request.dryRun,
      cooldownSecs: request.cooldownSecs,
      summary: {
        total: machines.length,
        resized: count("resized"),
        unchanged: count("unchanged"),
        planned: count("planned"),
        cooldown: count("cooldown"),
        rolledBack: count("rolled_back"),
        failed: count("failed"),
        unreachable: count("unreachable"),
      },
      durationMs: Date.now() - started,
      machines,
    });
  } catch (error) {
    if (error instanceof FlyApiError) return jsonResponse({ error: { code: "fly_error", message: error.message } }, 502);
    throw error;
  }
});
