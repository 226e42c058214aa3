// provision-machine: give a user their worker machine, once. Idempotent per user: a live machine is returned,
// never duplicated. A claim row (status provisioning, machine_id `pending-<uuid>`) taken under the
// one-live-machine-per-user unique index serialises concurrent calls; the Fly machine is created stopped
// (skip_launch) so its id can go into the trader_machine JWT, then updated with its env and started.
//
// Callers: service_role for any user ({userId}); an end user for themselves ({} or their own userId).
import { authenticate } from "../_shared/auth.ts";
import { FlyApiError, FlyClient, type FlyMachine, imageTag } from "../_shared/fly.ts";
import { HttpError, invalidBody, jsonResponse, postHandler, readJsonObject } from "../_shared/http.ts";
import {
  decryptBinanceKeys,
  lifecycleEnv,
  liveMachineRow,
  type LifecycleEnv,
  machineConfig,
  machineEnv,
  type MachineRow,
  markDestroyed,
  PENDING_PREFIX,
  rejectUnknownFields,
  targetUser,
  type UserForMachine,
} from "../_shared/machines.ts";
import { positiveIntEnv } from "../_shared/env.ts";
import { serviceClient } from "../_shared/supabase.ts";
import type { SupabaseClient } from "npm:@supabase/supabase-js@2.119.0";

const MAX_BODY_BYTES = 1024;
const REGION = /^[a-z]{3}$/;
// A claim older than this with no Fly machine behind it was left by a provisioning that died midway.
const ABANDONED_CLAIM_MS = 10 * 60_000;

function describe(row: MachineRow, state: string | null) {
  return {
    machineId: row.machine_id,
    userId: row.user_id,
    status: row.status,
    state,
    region: row.region,
    memoryMb: row.memory_mb,
    version: row.version,
    createdAt: row.created_at,
  };
}

async function loadUser(db: SupabaseClient, userId: string): Promise<UserForMachine> {
  const { data, error } = await db
    .from("users")
    .select("id, tier, preferred_region, real_trading_enabled, subscription_status")
    .eq("id", userId)
    .maybeSingle();
  if (error) throw new Error(`reading users failed: ${error.code} ${error.message}`);
  if (!data) throw new HttpError(404, "user_not_found", `user ${userId} has no account`);
  if (data.subscription_status === "cancelled") {
    throw new HttpError(403, "subscription_inactive", `user ${userId} has no active subscription`);
  }
  return data as UserForMachine;
}

/** Take the claim row; null when another live row (a machine, or a provisioning in flight) exists. */
async function claim(db: SupabaseClient, user: UserForMachine, region: string, memoryMb: number): Promise<MachineRow | null> {
  const { data, error } = await db
    .from("fly_machines")
    .insert({
      user_id: user.id,
      machine_id: `${PENDING_PREFIX}${crypto.randomUUID()}`,
      status: "provisioning",
      region,
      memory_mb: memoryMb,
    })
    .select("id, user_id, machine_id, status, region, memory_mb, version, created_at, last_heartbeat")
    .single();
  if (error?.code === "23505") return null;
  if (error) throw new Error(`claiming the machine row failed: ${error.code} ${error.message}`);
  return data as MachineRow;
}

async function setRow(db: SupabaseClient, rowId: string, values: Record<string, unknown>, onlyIfStatus?: string): Promise<void> {
  let query = db.from("fly_machines").update(values).eq("id", rowId);
  if (onlyIfStatus) query = query.eq("status", onlyIfStatus);
  const { error } = await query;
  if (error) throw new Error(`updating fly_machines failed: ${error.code} ${error.message}`);
}

/** Destroy what a failed provisioning created; the error the caller sees is the original one. */
async function undo(db: SupabaseClient, fly: FlyClient, row: MachineRow, machine: FlyMachine | null, reason: string) {
  if (machine) {
    try {
      await fly.destroy(machine.id, { force: true });
    } catch (error) {
      console.error(`provision-machine: cleanup destroy failed machine_id=${machine.id}: ${(error as Error).message}`);
    }
  }
  await markDestroyed(db, row.id, reason.slice(0, 500));
}

async function provision(env: LifecycleEnv, db: SupabaseClient, userId: string, region: string | null) {
  const fly = new FlyClient(env.fly);
  const user = await loadUser(db, userId);
  const placeholderConfig = machineConfig(env, user, {}); // 403 for tiers without a machine, before any write
  const memoryMb = placeholderConfig.guest?.memory_mb as number;
  const chosenRegion = region ?? user.preferred_region;

  let row = await claim(db, user, chosenRegion, memoryMb);
  if (!row) {
    const existing = await liveMachineRow(db, user.id);
    if (!existing) throw new HttpError(409, "provisioning_conflict", "the machine changed while provisioning; retry");
    const abandoned = existing.machine_id.startsWith(PENDING_PREFIX) &&
      Date.now() - Date.parse(existing.created_at) > ABANDONED_CLAIM_MS;
    if (!abandoned) {
      const inFlight = existing.machine_id.startsWith(PENDING_PREFIX);
      return { status: inFlight ? "in_progress" : "existing", row: existing, state: null as string | null };
    }
    await markDestroyed(db, existing.id, "provisioning abandoned");
    row = await claim(db, user, chosenRegion, memoryMb);
    if (!row) throw new HttpError(409, "provisioning_conflict", "another provisioning started meanwhile; retry");
  }

  let machine: FlyMachine | null = null;
  try {
    machine = await fly.create({ name: `trademind-${user.id}`, region: chosenRegion, config: placeholderConfig, skip_launch: true });
    await setRow(db, row.id, { machine_id: machine.id });
    // Keys reach a machine only when the user trades for real; paper trading needs none.
    const keys = user.real_trading_enabled ? await decryptBinanceKeys(db, user.id) : null;
    // A new row is at token generation 1 (fly_machines.token_generation's default).
    const config = machineConfig(env, user, await machineEnv(env, user, machine.id, 1, keys));
    const updated = await fly.update(machine.id, { config, current_version: machine.instance_id });
    const deadline = Date.now() + positiveIntEnv("PROVISION_WAIT_SECS", 90) * 1000;
    if (!await fly.waitFor(machine.id, "started", deadline, updated.instance_id)) {
      throw new HttpError(504, "machine_start_timeout", `machine ${machine.id} did not start in time`);
    }
    const version = imageTag(config.image);
    const values: Record<string, unknown> = { region: updated.region ?? chosenRegion, version };
    if (updated.private_ip) values.ip_address = updated.private_ip;
    await setRow(db, row.id, values);
    // The worker's own heartbeats move the row on from here; never move it back.
    await setRow(db, row.id, { status: "starting" }, "provisioning");
    const { data: fresh } = await db.from("fly_machines").select("*").eq("id", row.id).single();
    return { status: "provisioned", row: { ...row, ...(fresh as MachineRow) }, state: "started" };
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    console.error(`provision-machine: failed user_id=${user.id} machine_id=${machine?.id ?? "-"}: ${reason}`);
    await undo(db, fly, row, machine, `provisioning failed: ${reason}`);
    if (error instanceof FlyApiError) {
      const status = error.status === 0 || error.status >= 500 || error.status === 429 ? 503 : 502;
      throw new HttpError(status, "fly_error", `the machine could not be provisioned: ${error.message}`);
    }
    throw error;
  }
}

export const handler = postHandler("provision-machine", async (req) => {
  const env = lifecycleEnv();
  const caller = await authenticate(req);
  const body = await readJsonObject(req, MAX_BODY_BYTES);
  rejectUnknownFields(body, ["userId", "region"]);
  if (body.region !== undefined && (typeof body.region !== "string" || !REGION.test(body.region))) {
    throw invalidBody("region must be a three-letter Fly region code such as 'iad'");
  }
  const userId = targetUser(caller, body.userId, "provision");
  const db = serviceClient(env.supabase);
  const result = await provision(env, db, userId, (body.region as string | undefined) ?? null);
  if (result.status === "in_progress") {
    // Another call is creating this user's machine right now; its id is not known yet.
    return jsonResponse({ success: true, status: "in_progress", message: "the machine is being provisioned" }, 202);
  }
  return jsonResponse({
    success: true,
    status: result.status,
    machineId: result.row.machine_id,
    machine: describe(result.row, result.state),
  }, result.status === "provisioned" ? 201 : 200);
});
