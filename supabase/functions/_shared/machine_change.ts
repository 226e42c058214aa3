// Changing one worker machine's config safely, shared by update-machines (a new image) and scale-machines
// (a new size): under a Fly lease, apply the config fresh from Fly (current_version guards against a
// concurrent change), wait for the new version to be `started`, require the worker's /health to answer 200
// at the expected version (the health gate), and when that fails put the previous config back under the
// same lease, gated the same way (the rollback).
import { type FlyClient, imageTag, type MachineConfig } from "./fly.ts";
import { callMachine, type LifecycleEnv, type MachineRow, MachineUnreachable, replaceMachineIdentity, sleep } from "./machines.ts";

export const LEASE_TTL_SECS = 300;
const HEALTH_POLL_MS = 250;

/** How long a change may take to start and to pass /health; `skip` applies without waiting (immediate). */
export interface Gate {
  waitTimeoutSecs: number;
  healthTimeoutSecs: number;
  skip?: boolean;
}

/** How a failed machine was put back: `rolled_back` = on its previous config and healthy again. */
export interface RollbackResult {
  status: "rolled_back" | "failed";
  version: string;
  stage?: string;
  error?: string;
  durationMs?: number;
}

export class StageError extends Error {
  constructor(readonly stage: string, message: string) {
    super(message);
  }
}

export async function stage<T>(name: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (error) {
    if (error instanceof StageError) throw error;
    throw new StageError(name, (error as Error).message);
  }
}

export async function waitHealthy(
  env: LifecycleEnv,
  machineId: string,
  version: string,
  deadlineMs: number,
  stageName = "health",
): Promise<void> {
  let last = "no answer yet";
  while (Date.now() < deadlineMs) {
    try {
      const answer = await callMachine(env, machineId, "/health", { timeoutMs: 3000 });
      if (answer.status === 200 && answer.body?.version === version) return;
      last = `HTTP ${answer.status}, status ${answer.body?.status ?? "?"}, version ${answer.body?.version ?? "?"}`;
    } catch (error) {
      if (!(error instanceof MachineUnreachable)) throw error;
      last = error.message;
    }
    await sleep(HEALTH_POLL_MS);
  }
  throw new StageError(stageName, `/health did not pass with version ${version} in time (last: ${last})`);
}

/**
 * Apply `config` and, for a running machine, wait for that version to be started and healthy at `version`.
 * Stage names get `prefix` ("rollback-").
 */
export async function applyAndGate(
  env: LifecycleEnv,
  fly: FlyClient,
  gate: Gate,
  machineId: string,
  config: MachineConfig,
  { version, running, nonce, prefix = "" }: { version: string; running: boolean; nonce: string; prefix?: string },
): Promise<void> {
  const current = await stage(`${prefix}lookup`, () => fly.get(machineId));
  const updated = await stage(`${prefix}update`, () =>
    fly.update(machineId, { config, current_version: current.instance_id, skip_launch: !running }, nonce)
  );
  if (!running || gate.skip) return;
  const waitSecs = gate.waitTimeoutSecs;
  const reached = await stage(`${prefix}wait`, () => fly.waitFor(machineId, "started", Date.now() + waitSecs * 1000, updated.instance_id));
  if (!reached) throw new StageError(`${prefix}wait`, `version ${version} did not reach started within ${waitSecs}s`);
  await waitHealthy(env, machineId, version, Date.now() + gate.healthTimeoutSecs * 1000, `${prefix}health`);
}

/** Put a machine whose change failed back on `previous` (fresh token), gated like the change itself. */
export async function rollBack(
  env: LifecycleEnv,
  fly: FlyClient,
  gate: Gate,
  row: MachineRow,
  previous: MachineConfig,
  { running, nonce, caller }: { running: boolean; nonce: string; caller: string },
): Promise<RollbackResult> {
  const started = Date.now();
  const version = imageTag(previous.image);
  const rollback: RollbackResult = { status: "failed", version };
  try {
    // The change may have used most of the lease; the rollback needs as long again.
    await stage("rollback-lease", () => fly.refreshLease(row.machine_id, nonce, LEASE_TTL_SECS));
    // The rolled-back version gets an identity of its own too (the failed one's is refused from here).
    const identity = await replaceMachineIdentity(env, row.user_id, row.machine_id);
    const config = { ...previous, env: { ...(previous.env ?? {}), ...identity, VERSION: version } };
    await applyAndGate(env, fly, gate, row.machine_id, config, { version, running, nonce, prefix: "rollback-" });
    rollback.status = "rolled_back";
  } catch (error) {
    rollback.stage = error instanceof StageError ? error.stage : "rollback-update";
    rollback.error = (error as Error).message;
    console.error(`${caller}: machine_id=${row.machine_id} rollback to ${version} failed at ${rollback.stage}: ${rollback.error}`);
  }
  rollback.durationMs = Date.now() - started;
  return rollback;
}

/** Ask the worker to finish in-flight work before its process is replaced; a silent machine is changed anyway. */
export async function prepareShutdown(env: LifecycleEnv, row: MachineRow, caller: string): Promise<void> {
  try {
    const answer = await callMachine(env, row.machine_id, "/prepare-shutdown", { method: "POST", userId: row.user_id, timeoutMs: 35_000 });
    if (answer.status !== 200) console.warn(`${caller}: prepare-shutdown answered ${answer.status} machine_id=${row.machine_id}`);
  } catch (error) {
    if (!(error instanceof MachineUnreachable)) throw error;
    console.warn(`${caller}: ${error.message}; changing it anyway`);
  }
}
