// destroy-machine: stop a user's worker gracefully and destroy it. Under a Fly lease: POST /prepare-shutdown
// on the machine (timers paused, in-flight work finished, state persisted; its answer is the final state),
// Fly stop with SIGTERM, wait for `stopped`, destroy, mark the row destroyed. A machine that cannot be
// reached is still destroyed (force) and the final state is read from the database instead.
//
// Callers: service_role for any user ({userId}); an end user for themselves.
import type { SupabaseClient } from "npm:@supabase/supabase-js@2.119.0";
import { authenticate } from "../_shared/auth.ts";
import { positiveIntEnv } from "../_shared/env.ts";
import { FlyApiError, FlyClient } from "../_shared/fly.ts";
import { HttpError, invalidBody, jsonResponse, postHandler, readJsonObject } from "../_shared/http.ts";
import {
  callMachine,
  databaseFinalState,
  lifecycleEnv,
  type LifecycleEnv,
  liveMachineRow,
  MachineUnreachable,
  markDestroyed,
  PENDING_PREFIX,
  rejectUnknownFields,
  targetUser,
} from "../_shared/machines.ts";
import { serviceClient } from "../_shared/supabase.ts";

const MAX_BODY_BYTES = 1024;
const REASONS = ["subscription_cancelled", "user_request", "inactivity", "update", "operator"] as const;
const PREPARE_TIMEOUT_MS = 35_000;
const LEASE_TTL_SECS = 180;

interface FinalState {
  openPositions: number;
  watchingSignals: number;
  source: "machine" | "database";
}

async function finalStateFromMachine(env: LifecycleEnv, machineId: string, userId: string): Promise<FinalState | null> {
  try {
    const answer = await callMachine(env, machineId, "/prepare-shutdown", { method: "POST", userId, timeoutMs: PREPARE_TIMEOUT_MS });
    const body = answer.body;
    if (answer.status === 200 && typeof body?.openPositions === "number" && typeof body?.watchingSignals === "number") {
      return { openPositions: body.openPositions, watchingSignals: body.watchingSignals, source: "machine" };
    }
    console.warn(`destroy-machine: prepare-shutdown answered ${answer.status} machine_id=${machineId}`);
  } catch (error) {
    if (!(error instanceof MachineUnreachable)) throw error;
    console.warn(`destroy-machine: ${error.message}`);
  }
  return null;
}

/** Stop and destroy on Fly; returns whether the machine stopped by itself (false: it was killed). */
async function stopAndDestroy(fly: FlyClient, machineId: string, nonce: string): Promise<boolean> {
  let stopped = false;
  try {
    await fly.stop(machineId, { signal: "SIGTERM", timeout: "35s" }, nonce);
  } catch (error) {
    // 412: not running (already stopped, or never started) - nothing to stop.
    if (!(error instanceof FlyApiError) || error.status !== 412) throw error;
  }
  const deadline = Date.now() + positiveIntEnv("DESTROY_STOP_WAIT_SECS", 45) * 1000;
  const machine = await fly.get(machineId);
  stopped = ["stopped", "created", "failed"].includes(machine.state) || await fly.waitFor(machineId, "stopped", deadline);
  await fly.destroy(machineId, { force: !stopped, nonce });
  return stopped;
}

async function destroy(env: LifecycleEnv, db: SupabaseClient, userId: string, reason: string) {
  const row = await liveMachineRow(db, userId);
  if (!row) throw new HttpError(404, "machine_not_found", `user ${userId} has no live machine`);
  const machineId = row.machine_id;
  console.log(`destroy-machine: user_id=${userId} machine_id=${machineId} reason=${reason}`);
  if (machineId.startsWith(PENDING_PREFIX)) {
    throw new HttpError(409, "machine_busy", "the machine is still being provisioned; retry in a minute");
  }
  const fly = new FlyClient(env.fly);
  let nonce: string | null = null;
  try {
    nonce = await fly.acquireLease(machineId, LEASE_TTL_SECS, `destroy-machine: ${reason}`);
  } catch (error) {
    if (!(error instanceof FlyApiError)) throw error;
    if (error.status === 409) throw new HttpError(409, "machine_busy", `machine ${machineId} is being changed by someone else (leased)`);
    if (error.status !== 404) throw new HttpError(502, "fly_error", error.message);
  }
  let final: FinalState | null = null;
  let graceful = false;
  if (nonce) {
    final = await finalStateFromMachine(env, machineId, userId);
    try {
      graceful = await stopAndDestroy(fly, machineId, nonce) && final !== null;
    } catch (error) {
      if (!(error instanceof FlyApiError) || error.status !== 404) {
        await fly.releaseLease(machineId, nonce);
        throw error instanceof FlyApiError ? new HttpError(502, "fly_error", error.message) : error;
      }
    }
  }
  // Fly no longer knows the machine (404) or it is destroyed now: the row follows.
  final ??= { ...(await databaseFinalState(db, userId)), source: "database" };
  await markDestroyed(db, row.id);
  return { machineId, graceful, final };
}

export const handler = postHandler("destroy-machine", async (req) => {
  const env = lifecycleEnv();
  const caller = await authenticate(req);
  const body = await readJsonObject(req, MAX_BODY_BYTES);
  rejectUnknownFields(body, ["userId", "reason"]);
  const reason = body.reason === undefined ? (caller.role === "service_role" ? "operator" : "user_request") : body.reason;
  if (typeof reason !== "string" || !(REASONS as readonly string[]).includes(reason)) {
    throw invalidBody(`reason must be one of: ${REASONS.join(", ")}`);
  }
  const userId = targetUser(caller, body.userId, "destroy");
  const result = await destroy(env, serviceClient(env.supabase), userId, reason);
  return jsonResponse({
    success: true,
    message: "Machine destroyed",
    machineId: result.machineId,
    graceful: result.graceful,
    openPositions: result.final.openPositions,
    watchingSignals: result.final.watchingSignals,
    finalStateSource: result.final.source,
  });
});
