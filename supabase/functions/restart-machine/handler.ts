// restart-machine: restart a user's worker on its current image with a freshly built environment (a new machine
// token, and the Binance keys exactly when the user has real trading switched on), then wait until it is healthy.
// Under a Fly lease: POST /prepare-shutdown (in-flight work finishes), update the machine's config (Fly restarts
// it with the new env; current_version guards against a concurrent change), wait for `started`, then require
// /health 200. This is how a switch to real trading (or back) reaches the machine.
//
// Callers: service_role for any user ({userId}); an end user for themselves.
import { authenticate } from "../_shared/auth.ts";
import { positiveIntEnv } from "../_shared/env.ts";
import { FlyApiError, FlyClient, imageTag } from "../_shared/fly.ts";
import { HttpError, jsonResponse, postHandler, readJsonObject } from "../_shared/http.ts";
import {
  callMachine,
  decryptBinanceKeys,
  lifecycleEnv,
  type LifecycleEnv,
  liveMachineRow,
  machineConfig,
  machineEnv,
  nextMachineGeneration,
  MachineUnreachable,
  PENDING_PREFIX,
  rejectUnknownFields,
  sleep,
  targetUser,
  type UserForMachine,
  withRuntimeSettings,
} from "../_shared/machines.ts";
import { serviceClient } from "../_shared/supabase.ts";

const MAX_BODY_BYTES = 1024;
const LEASE_TTL_SECS = 180;
const PREPARE_TIMEOUT_MS = 35_000;
const HEALTH_POLL_MS = 250;

async function waitHealthy(env: LifecycleEnv, machineId: string, deadlineMs: number): Promise<Record<string, unknown>> {
  let last = "no answer yet";
  while (Date.now() < deadlineMs) {
    try {
      const answer = await callMachine(env, machineId, "/health", { timeoutMs: 3000 });
      if (answer.status === 200) return answer.body ?? {};
      last = `HTTP ${answer.status}, status ${answer.body?.status ?? "?"}`;
    } catch (error) {
      if (!(error instanceof MachineUnreachable)) throw error;
      last = error.message;
    }
    await sleep(HEALTH_POLL_MS);
  }
  throw new HttpError(504, "machine_unhealthy", `machine ${machineId} restarted but /health did not pass in time (last: ${last})`);
}

export const handler = postHandler("restart-machine", async (req) => {
  const env = lifecycleEnv();
  const caller = await authenticate(req);
  const body = await readJsonObject(req, MAX_BODY_BYTES);
  rejectUnknownFields(body, ["userId"]);
  const userId = targetUser(caller, body.userId, "restart");
  const db = serviceClient(env.supabase);
  const row = await liveMachineRow(db, userId);
  if (!row) throw new HttpError(404, "machine_not_found", `user ${userId} has no machine: provision one first`);
  if (row.machine_id.startsWith(PENDING_PREFIX)) {
    throw new HttpError(409, "machine_provisioning", "the machine is still being provisioned; try again in a minute");
  }
  const { data: user, error } = await db.from("users").select("id, tier, preferred_region, real_trading_enabled")
    .eq("id", userId).single();
  if (error) throw new Error(`reading users failed: ${error.code} ${error.message}`);

  const fly = new FlyClient(env.fly);
  const machineId = row.machine_id;
  let nonce: string;
  try {
    nonce = await fly.acquireLease(machineId, LEASE_TTL_SECS, "restart-machine");
  } catch (error) {
    if (error instanceof FlyApiError && error.status === 409) {
      throw new HttpError(409, "machine_busy", `machine ${machineId} is being changed by another operation; try again`);
    }
    if (error instanceof FlyApiError && error.status === 404) {
      // The row outlived its machine (check-machine-health reports it); nothing here can restart it.
      throw new HttpError(404, "machine_not_found", `machine ${machineId} no longer exists at Fly`);
    }
    throw error;
  }
  try {
    const machine = await fly.get(machineId);
    if (machine.state === "started") {
      try {
        await callMachine(env, machineId, "/prepare-shutdown", { method: "POST", userId, timeoutMs: PREPARE_TIMEOUT_MS });
      } catch (error) {
        // A machine that cannot answer is what a restart should fix; go on.
        if (!(error instanceof MachineUnreachable)) throw error;
      }
    }
    const keys = user.real_trading_enabled ? await decryptBinanceKeys(db, userId) : null;
    // The restarted version gets a new identity (the running one's token and credential are refused from here).
    const generation = await nextMachineGeneration(env, machineId);
    const fresh = machineConfig(env, user as UserForMachine, await machineEnv(env, user as UserForMachine, machineId, generation, keys));
    // Its own image, a fresh env reporting that image's version, today's runtime settings (the HTTP
    // service the functions reach it through included).
    const image = machine.config?.image ?? fresh.image;
    const config = withRuntimeSettings({ ...machine.config, image, env: { ...fresh.env, VERSION: imageTag(image) } });
    const updated = await fly.update(machineId, { config, current_version: machine.instance_id }, nonce);
    const waitSecs = positiveIntEnv("RESTART_WAIT_SECS", 90);
    if (!await fly.waitFor(machineId, "started", Date.now() + waitSecs * 1000, updated.instance_id)) {
      throw new HttpError(504, "machine_start_timeout", `machine ${machineId} did not start again within ${waitSecs}s`);
    }
    const health = await waitHealthy(env, machineId, Date.now() + positiveIntEnv("RESTART_HEALTH_SECS", 60) * 1000);
    return jsonResponse({
      success: true,
      machineId,
      version: imageTag(config.image),
      realTrading: keys !== null,
      health,
    });
  } finally {
    await fly.releaseLease(machineId, nonce);
  }
});
