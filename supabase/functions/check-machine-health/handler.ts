// check-machine-health: ask every live machine's /health at once (bounded fan-out) and summarise, joined with
// Fly's view (state) and the database's (status, heartbeat age). Operators (service_role) see every machine
// or the listed users'; an end user sees only their own.
import type { SupabaseClient } from "npm:@supabase/supabase-js@2.119.0";
import { authenticate, type Caller, isUuid } from "../_shared/auth.ts";
import { positiveIntEnv } from "../_shared/env.ts";
import { FlyApiError, FlyClient, type FlyMachine } from "../_shared/fly.ts";
import { HttpError, invalidBody, jsonResponse, postHandler, readJsonObject } from "../_shared/http.ts";
import {
  callMachine,
  lifecycleEnv,
  type LifecycleEnv,
  MACHINE_COLUMNS,
  type MachineRow,
  MachineUnreachable,
  mapLimited,
  PENDING_PREFIX,
  rejectUnknownFields,
} from "../_shared/machines.ts";
import { serviceClient } from "../_shared/supabase.ts";

const MAX_BODY_BYTES = 64 * 1024;
const HEALTH_TIMEOUT_MS = 5000;

interface MachineHealth {
  userId: string;
  machineId: string;
  state: string;
  status: string;
  version: string | null;
  healthy: boolean;
  activeTraders: number | null;
  openPositions: number | null;
  websocketConnected: boolean | null;
  components: Record<string, string> | null;
  lastHeartbeat: string | null;
  heartbeatAgeSecs: number | null;
  error?: string;
}

function scope(caller: Caller, userIds: unknown): string[] | null {
  if (userIds !== undefined && (!Array.isArray(userIds) || !userIds.length || !userIds.every(isUuid))) {
    throw invalidBody("userIds must be a non-empty list of user ids");
  }
  if (caller.role === "service_role") return (userIds as string[] | undefined) ?? null;
  if (caller.role === "authenticated") {
    if (userIds && (userIds as string[]).some((id) => id !== caller.userId)) {
      throw new HttpError(403, "forbidden", "a user may check only their own machine");
    }
    return [caller.userId as string];
  }
  throw new HttpError(403, "forbidden", `role '${caller.role}' may not check machine health`);
}

async function liveRows(db: SupabaseClient, userIds: string[] | null): Promise<MachineRow[]> {
  let query = db.from("fly_machines").select(MACHINE_COLUMNS).neq("status", "destroyed").order("user_id");
  if (userIds) query = query.in("user_id", userIds);
  const { data, error } = await query;
  if (error) throw new Error(`reading fly_machines failed: ${error.code} ${error.message}`);
  return data as MachineRow[];
}

async function check(env: LifecycleEnv, row: MachineRow, flyMachine: FlyMachine | undefined, nowMs: number): Promise<MachineHealth> {
  const heartbeatMs = row.last_heartbeat ? Date.parse(row.last_heartbeat) : null;
  const health: MachineHealth = {
    userId: row.user_id,
    machineId: row.machine_id,
    state: flyMachine?.state ?? (row.machine_id.startsWith(PENDING_PREFIX) ? "provisioning" : "missing"),
    status: row.status,
    version: row.version,
    healthy: false,
    activeTraders: null,
    openPositions: null,
    websocketConnected: null,
    components: null,
    lastHeartbeat: row.last_heartbeat,
    heartbeatAgeSecs: heartbeatMs === null ? null : Math.max(0, Math.round((nowMs - heartbeatMs) / 100) / 10),
  };
  if (!flyMachine) {
    health.error = "the machine is not on Fly";
    return health;
  }
  try {
    const answer = await callMachine(env, row.machine_id, "/health", { timeoutMs: HEALTH_TIMEOUT_MS });
    const body = answer.body ?? {};
    health.healthy = answer.status === 200 && body.status === "healthy";
    if (typeof body.version === "string") health.version = body.version;
    if (typeof body.activeTraders === "number") health.activeTraders = body.activeTraders;
    if (typeof body.openPositions === "number") health.openPositions = body.openPositions;
    if (typeof body.websocketConnected === "boolean") health.websocketConnected = body.websocketConnected;
    if (body.components && typeof body.components === "object") health.components = body.components as Record<string, string>;
    if (!health.healthy) health.error = `health answered HTTP ${answer.status} (${String(body.status ?? "no status")})`;
  } catch (error) {
    if (!(error instanceof MachineUnreachable)) throw error;
    health.error = error.message;
  }
  return health;
}

export const handler = postHandler("check-machine-health", async (req) => {
  const env = lifecycleEnv();
  const caller = await authenticate(req);
  const body = await readJsonObject(req, MAX_BODY_BYTES);
  rejectUnknownFields(body, ["userIds"]);
  const userIds = scope(caller, body.userIds);
  const db = serviceClient(env.supabase);
  const rows = await liveRows(db, userIds);
  let flyMachines: Map<string, FlyMachine>;
  try {
    flyMachines = new Map((await new FlyClient(env.fly).list()).map((machine) => [machine.id, machine]));
  } catch (error) {
    if (error instanceof FlyApiError) throw new HttpError(502, "fly_error", error.message);
    throw error;
  }
  const nowMs = Date.now();
  const concurrency = positiveIntEnv("HEALTH_CONCURRENCY", 32);
  const machines = await mapLimited(rows, concurrency, (row) => check(env, row, flyMachines.get(row.machine_id), nowMs));
  const healthy = machines.filter((machine) => machine.healthy).length;
  return jsonResponse({
    success: healthy === machines.length,
    summary: { total: machines.length, healthy, unhealthy: machines.length - healthy },
    checkedAt: new Date(nowMs).toISOString(),
    machines,
  });
});
