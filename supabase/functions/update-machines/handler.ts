// update-machines: roll every live worker machine (or the listed users') to a new image, operators only.
//
// Machines are sorted by id and updated in batches of `maxUnavailable` (canary: one machine first). For each
// machine: take a Fly lease, POST /prepare-shutdown on the worker, update the full config fresh from Fly with
// the new image and a re-minted machine token (current_version guards against a concurrent change), wait for
// the new version to be `started`, then require the worker's /health to answer 200 with the new version.
// A machine that fails after the worker was told to shut down (update, wait or health) is rolled back under
// the same lease: its previous config goes back (with a fresh machine token) and must pass the same gates
// with the previous version; its result says both what failed and how the rollback went. The rollout stops
// after the first batch with a failure unless `continueOnFailure`. Machines already on the image are
// skipped, so calling again resumes a rollout; when the time budget (`deadlineSecs`) would be exceeded the
// answer is `complete: false` with the rest `pending`.
import type { SupabaseClient } from "npm:@supabase/supabase-js@2.119.0";
import { authenticate, isUuid, requireRole } from "../_shared/auth.ts";
import { positiveIntEnv } from "../_shared/env.ts";
import { FlyApiError, FlyClient, type FlyMachine, imageTag, type MachineConfig } from "../_shared/fly.ts";
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
  lifecycleEnv,
  type LifecycleEnv,
  MACHINE_COLUMNS,
  type MachineRow,
  PENDING_PREFIX,
  rejectUnknownFields,
  replaceMachineIdentity,
  withRuntimeSettings,
} from "../_shared/machines.ts";
import { serviceClient } from "../_shared/supabase.ts";

const MAX_BODY_BYTES = 64 * 1024;
const STRATEGIES = ["rolling", "canary", "immediate"] as const;
type Strategy = typeof STRATEGIES[number];
// An image reference: registry/repository[:tag][@digest], no whitespace.
const IMAGE = /^[a-z0-9][a-z0-9._\-\/:@]{0,254}$/i;

interface UpdateRequest {
  image: string;
  strategy: Strategy;
  maxUnavailable: number;
  continueOnFailure: boolean;
  dryRun: boolean;
  userIds: string[] | null;
  deadlineSecs: number;
  waitTimeoutSecs: number;
  healthTimeoutSecs: number;
}

type Outcome = "updated" | "failed" | "skipped" | "pending";

interface MachineResult {
  machineId: string;
  userId: string;
  batch: number;
  status: Outcome;
  fromVersion: string | null;
  toVersion: string;
  stage?: string;
  error?: string;
  rollback?: RollbackResult;
  startedAt?: string;
  finishedAt?: string;
  durationMs?: number;
}

function parseRequest(body: Record<string, unknown>): UpdateRequest {
  rejectUnknownFields(body, [
    "image", "strategy", "maxUnavailable", "continueOnFailure", "dryRun", "userIds", "deadlineSecs", "waitTimeoutSecs",
    "healthTimeoutSecs",
  ]);
  const {
    image, strategy = "rolling", maxUnavailable = 1, continueOnFailure = false, dryRun = false, userIds, deadlineSecs = 120,
    waitTimeoutSecs = positiveIntEnv("UPDATE_WAIT_SECS", 90), healthTimeoutSecs = positiveIntEnv("UPDATE_HEALTH_SECS", 60),
  } = body;
  if (typeof image !== "string" || !IMAGE.test(image)) throw invalidBody("image is required: an image reference such as registry.fly.io/app:v42");
  if (!(STRATEGIES as readonly unknown[]).includes(strategy)) throw invalidBody(`strategy must be one of: ${STRATEGIES.join(", ")}`);
  if (!Number.isInteger(maxUnavailable) || (maxUnavailable as number) < 1 || (maxUnavailable as number) > 100) {
    throw invalidBody("maxUnavailable must be an integer between 1 and 100");
  }
  if (typeof continueOnFailure !== "boolean") throw invalidBody("continueOnFailure must be a boolean");
  if (typeof dryRun !== "boolean") throw invalidBody("dryRun must be a boolean");
  if (userIds !== undefined && (!Array.isArray(userIds) || !userIds.length || !userIds.every(isUuid))) {
    throw invalidBody("userIds must be a non-empty list of user ids");
  }
  if (!Number.isInteger(deadlineSecs) || (deadlineSecs as number) < 10 || (deadlineSecs as number) > 3600) {
    throw invalidBody("deadlineSecs must be an integer between 10 and 3600");
  }
  for (const [name, value] of [["waitTimeoutSecs", waitTimeoutSecs], ["healthTimeoutSecs", healthTimeoutSecs]] as const) {
    if (!Number.isInteger(value) || (value as number) < 1 || (value as number) > 600) {
      throw invalidBody(`${name} must be an integer between 1 and 600`);
    }
  }
  return {
    image,
    strategy: strategy as Strategy,
    maxUnavailable: maxUnavailable as number,
    continueOnFailure,
    dryRun,
    userIds: (userIds as string[] | undefined) ?? null,
    deadlineSecs: deadlineSecs as number,
    waitTimeoutSecs: waitTimeoutSecs as number,
    healthTimeoutSecs: healthTimeoutSecs as number,
  };
}

async function liveRows(db: SupabaseClient, userIds: string[] | null): Promise<MachineRow[]> {
  let query = db.from("fly_machines").select(MACHINE_COLUMNS).neq("status", "destroyed").order("machine_id");
  if (userIds) query = query.in("user_id", userIds);
  const { data, error } = await query;
  if (error) throw new Error(`reading fly_machines failed: ${error.code} ${error.message}`);
  return (data as MachineRow[]).filter((row) => !row.machine_id.startsWith(PENDING_PREFIX));
}

/** Split into batches: rolling = chunks of maxUnavailable; canary = one first; immediate = all at once. */
export function planBatches<T>(items: readonly T[], strategy: Strategy, maxUnavailable: number): T[][] {
  if (!items.length) return [];
  if (strategy === "immediate") return [items.slice()];
  const rest = strategy === "canary" ? items.slice(1) : items.slice();
  const batches: T[][] = strategy === "canary" ? [[items[0]]] : [];
  for (let i = 0; i < rest.length; i += maxUnavailable) batches.push(rest.slice(i, i + maxUnavailable));
  return batches;
}

function gateOf(request: UpdateRequest): Gate {
  return {
    waitTimeoutSecs: request.waitTimeoutSecs,
    healthTimeoutSecs: request.healthTimeoutSecs,
    skip: request.strategy === "immediate",
  };
}

async function updateOne(
  env: LifecycleEnv,
  fly: FlyClient,
  request: UpdateRequest,
  row: MachineRow,
  known: FlyMachine | undefined,
  result: MachineResult,
): Promise<void> {
  const started = Date.now();
  result.startedAt = new Date(started).toISOString();
  const machineId = row.machine_id;
  let nonce: string | null = null;
  // Set just before the worker is asked to shut down: from then on a failure may leave it paused or on the
  // new image, so it is rolled back to `previous`.
  let previous: MachineConfig | null = null;
  let running = false;
  try {
    if (!known) throw new StageError("lookup", `machine ${machineId} is not on Fly`);
    nonce = await stage("lease", () => fly.acquireLease(machineId, LEASE_TTL_SECS, `update-machines to ${request.image}`));
    const machine = await stage("lookup", () => fly.get(machineId));
    if (!machine.config?.image) throw new StageError("lookup", `machine ${machineId} has no config on Fly`);
    result.fromVersion = imageTag(machine.config.image);
    running = machine.state === "started";
    previous = machine.config;
    // The new version is what should fix a machine that cannot answer, so a silent one is updated anyway.
    if (running && request.strategy !== "immediate") await prepareShutdown(env, row, "update-machines");
    // Fresh from Fly, so nothing another caller set is lost; the runtime settings are today's. The new
    // version gets a new identity: from here the old version's tokens and credential are refused.
    const identity = await replaceMachineIdentity(env, row.user_id, machineId);
    const config = withRuntimeSettings({
      ...machine.config,
      image: request.image,
      env: { ...(machine.config.env ?? {}), ...identity, VERSION: result.toVersion },
    });
    await applyAndGate(env, fly, gateOf(request), machineId, config, { version: result.toVersion, running, nonce });
    result.status = "updated";
  } catch (error) {
    result.status = "failed";
    result.stage = error instanceof StageError ? error.stage : "update";
    result.error = (error as Error).message;
    if (error instanceof StageError && error.stage === "lease" && error.message.includes("409")) {
      result.error = `leased by someone else: ${error.message}`;
    }
    console.error(`update-machines: machine_id=${machineId} failed at ${result.stage}: ${result.error}`);
    if (previous && nonce) {
      result.rollback = await rollBack(env, fly, gateOf(request), row, previous, { running, nonce, caller: "update-machines" });
    }
  } finally {
    if (nonce) await fly.releaseLease(machineId, nonce);
    result.finishedAt = new Date().toISOString();
    result.durationMs = Date.now() - started;
  }
}

async function rollout(env: LifecycleEnv, db: SupabaseClient, request: UpdateRequest) {
  const fly = new FlyClient(env.fly);
  const startedAt = Date.now();
  const rows = await liveRows(db, request.userIds);
  const flyMachines = new Map((await fly.list()).map((machine) => [machine.id, machine]));
  const toVersion = imageTag(request.image);
  const results: MachineResult[] = [];
  const todo: { row: MachineRow; result: MachineResult }[] = [];
  for (const row of rows) {
    const known = flyMachines.get(row.machine_id);
    const fromVersion = known?.config?.image ? imageTag(known.config.image) : row.version;
    const result: MachineResult = { machineId: row.machine_id, userId: row.user_id, batch: 0, status: "pending", fromVersion, toVersion };
    results.push(result);
    if (known?.config?.image === request.image) {
      result.status = "skipped";
      result.error = "already on this image";
    } else {
      todo.push({ row, result });
    }
  }
  const batches = planBatches(todo, request.strategy, request.maxUnavailable);
  batches.forEach((batch, index) => batch.forEach(({ result }) => (result.batch = index + 1)));
  let complete = true;
  let halted = false;
  if (!request.dryRun) {
    let slowestBatchMs = 0;
    for (const batch of batches) {
      const elapsed = Date.now() - startedAt;
      if (elapsed + slowestBatchMs > request.deadlineSecs * 1000) {
        complete = false;
        break;
      }
      const batchStarted = Date.now();
      await Promise.all(batch.map(({ row, result }) => updateOne(env, fly, request, row, flyMachines.get(row.machine_id), result)));
      slowestBatchMs = Math.max(slowestBatchMs, Date.now() - batchStarted);
      if (!request.continueOnFailure && batch.some(({ result }) => result.status === "failed")) {
        halted = true;
        break;
      }
    }
  }
  const count = (status: Outcome) => results.filter((result) => result.status === status).length;
  const rollbacks = (status: RollbackResult["status"]) => results.filter((result) => result.rollback?.status === status).length;
  const summary = {
    total: results.length,
    updated: count("updated"),
    failed: count("failed"),
    rolledBack: rollbacks("rolled_back"),
    rollbackFailed: rollbacks("failed"),
    skipped: count("skipped"),
    pending: count("pending"),
  };
  return {
    success: summary.failed === 0 && (request.dryRun || summary.pending === 0),
    complete: request.dryRun ? false : complete && summary.pending === 0,
    // A failed machine stopped the rollout (the rest are `pending`; each failure says how its rollback went).
    halted,
    dryRun: request.dryRun,
    image: request.image,
    strategy: request.strategy,
    maxUnavailable: request.maxUnavailable,
    summary,
    durationMs: Date.now() - startedAt,
    machines: results,
  };
}

export const handler = postHandler("update-machines", async (req) => {
  const env = lifecycleEnv();
  const caller = await authenticate(req);
  const request = parseRequest(await readJsonObject(req, MAX_BODY_BYTES));
  requireRole(caller, ["service_role"], "update machines");
  try {
    return jsonResponse(await rollout(env, serviceClient(env.supabase), request));
  } catch (error) {
    if (error instanceof FlyApiError) return jsonResponse({ error: { code: "fly_error", message: error.message } }, 502);
    throw error;
  }
});
