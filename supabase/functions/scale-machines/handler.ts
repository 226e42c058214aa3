// scale-machines: size every running worker machine (or the listed users') by its load, operators only
// (pg_cron calls it every minute). Each worker's /metrics `load` (sweep duration against its interval, CPU,
// memory against the machine's) gives a target size within the user's tier (sizing.ts). A resize is taken
// in the database first (begin_machine_resize: none within `cooldownSecs`, default 5 minutes, none while
// another is in flight), then made like an update (machine_change.ts): Fly lease, /prepare-shutdown, the
// config fresh from Fly with the new guest size, the new version started and healthy, else the previous
// config back under the same lease. finish_machine_resize records the outcome (applied: the row's size,
// billing and the user's notification follow).
import type { SupabaseClient } from "npm:@supabase/supabase-js@2.119.0";
import { authenticate, isUuid, requireRole } from "../_shared/auth.ts";
import { FlyApiError, FlyClient, imageTag, type MachineConfig } from "../_shared/fly.ts";
import { invalidBody, jsonResponse, postHandler, readJsonObject } from "../_shared/http.ts";
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

interface ScaleRequest {
  userIds: string[] | null;
  dryRun: boolean;
  cooldownSecs: number;
  gate: Gate;
}

type Outcome = "resized" | "unchanged" | "cooldown" | "rolled_back" | "failed" | "unreachable" | "planned";

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
      waitTimeoutSecs: intField(body, "waitTimeoutSecs", 90, 1, 600),
      healthTimeoutSecs: intField(body, "healthTimeoutSecs", 60, 1, 600),
    },
  };
}

async function runningRows(db: SupabaseClient, userIds: string[] | null): Promise<Row[]> {
  let query = db.from("fly_machines").select(`${MACHINE_COLUMNS}, cpus, users(tier)`).eq("status", "running").order("machine_id");
  if (userIds) query = query.in("user_id", userIds);
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

async function resize(env: LifecycleEnv, fly: FlyClient, request: ScaleRequest, row: Row, target: Size, result: MachineResult) {
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
    await applyAndGate(env, fly, request.gate, row.machine_id, config, { version, running, nonce });
    result.status = "resized";
  } catch (error) {
    result.status = "failed";
    result.stage = error instanceof StageError ? error.stage : "update";
    result.error = (error as Error).message;
    console.error(`scale-machines: machine_id=${row.machine_id} failed at ${result.stage}: ${result.error}`);
    if (previous && nonce) {
      result.rollback = await rollBack(env, fly, request.gate, row, previous, { running, nonce, caller: "scale-machines" });
      if (result.rollback.status === "rolled_back") result.status = "rolled_back";
    }
  } finally {
    if (nonce) await fly.releaseLease(row.machine_id, nonce);
  }
}

async function scaleOne(env: LifecycleEnv, db: SupabaseClient, fly: FlyClient, request: ScaleRequest, row: Row): Promise<MachineResult> {
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
  if (!decision.target) return result;
  result.to = decision.target;
  if (request.dryRun) {
    result.status = "planned";
    return result;
  }
  const { data: resizeId, error } = await db.rpc("begin_machine_resize", {
    machine_row_id: row.id,
    to_cpus: decision.target.cpus,
    to_memory_mb: decision.target.memoryMb,
    reason: decision.reason,
    cooldown_secs: request.cooldownSecs,
  });
  if (error) throw new Error(`begin_machine_resize failed: ${error.code} ${error.message}`);
  if (!resizeId) {
    result.status = "cooldown";
    return result;
  }
  await resize(env, fly, request, row, decision.target, result);
  const status = result.status === "resized" ? "applied" : result.status;
  const { error: finishError } = await db.rpc("finish_machine_resize", {
    resize_id: resizeId,
    status,
    error: result.error ?? null,
  });
  if (finishError) console.error(`scale-machines: finish_machine_resize failed resize_id=${resizeId}: ${finishError.message}`);
  return result;
}

export const handler = postHandler("scale-machines", async (req) => {
  const env = lifecycleEnv();
  const caller = await authenticate(req);
  const request = parseRequest(await readJsonObject(req, MAX_BODY_BYTES));
  requireRole(caller, ["service_role"], "scale machines");
  const db = serviceClient(env.supabase);
  const fly = new FlyClient(env.fly);
  const started = Date.now();
  try {
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
