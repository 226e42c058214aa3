// Make sure the user has a worker machine: reuse a live one, else ask provision-machine for one. Until
// that function is deployed the trader is still saved and the answer says no machine exists yet.
import type { SupabaseClient } from "npm:@supabase/supabase-js@2.119.0";
import type { SupabaseEnv } from "../_shared/env.ts";

export interface MachineOutcome {
  status: "existing" | "provisioned" | "not_provisioned";
  machineId?: string;
  message?: string;
}

const PROVISION_TIMEOUT_MS = 20_000;

export async function provisionMachine(db: SupabaseClient, env: SupabaseEnv, userId: string): Promise<MachineOutcome> {
  const { data: live, error } = await db
    .from("fly_machines")
    .select("machine_id, status")
    .eq("user_id", userId)
    .neq("status", "destroyed")
    .maybeSingle();
  if (error) throw new Error(`reading fly_machines failed: ${error.message}`);
  if (live) return { status: "existing", machineId: live.machine_id };

  let response: Response;
  try {
    response = await fetch(`${env.url}/functions/v1/provision-machine`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        apikey: env.serviceRoleKey,
        authorization: `Bearer ${env.serviceRoleKey}`,
      },
      body: JSON.stringify({ userId }),
      signal: AbortSignal.timeout(PROVISION_TIMEOUT_MS),
    });
  } catch (error) {
    console.error(`generate-strategy: provision-machine unreachable user_id=${userId}: ${(error as Error).message}`);
    return { status: "not_provisioned", message: "no machine is provisioned yet: provisioning could not be reached; it will be retried" };
  }
  const body = await response.json().catch(() => null) as Record<string, unknown> | null;
  if (response.status === 404) {
    await response.body?.cancel().catch(() => {});
    return { status: "not_provisioned", message: "no machine is provisioned yet: machine provisioning is not available" };
  }
  if (!response.ok) {
    console.error(`generate-strategy: provision-machine answered ${response.status} user_id=${userId}`);
    return { status: "not_provisioned", message: `no machine is provisioned yet: provisioning failed (HTTP ${response.status})` };
  }
  const machineId = body?.machineId ?? (body?.machine as Record<string, unknown> | undefined)?.machine_id;
  return typeof machineId === "string"
    ? { status: "provisioned", machineId }
    : { status: "provisioned", message: "provisioning started" };
}
