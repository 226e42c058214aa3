// Make sure the user has a worker machine: reuse a live one, else ask provision-machine for one. When that
// function is missing or refuses, the trader is still saved and the answer says no machine exists yet.
import type { SupabaseClient } from "npm:@supabase/supabase-js@2.119.0";
import type { SupabaseEnv } from "../_shared/env.ts";

export interface MachineOutcome {
  status: "existing" | "provisioned" | "provisioning" | "not_provisioned";
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
    return { status: "not_provisioned", message: "no machine is provisioned yet: provisioning could not be reached; call provision-machine to retry" };
  }
  const body = await response.json().catch(() => null) as Record<string, unknown> | null;
  if (response.status === 404 && (body?.error as { code?: string } | undefined)?.code !== "user_not_found") {
    return { status: "not_provisioned", message: "no machine is provisioned yet: machine provisioning is not available" };
  }
  if (response.status === 202) return { status: "provisioning", message: "the machine is being provisioned" };
  if (!response.ok) {
    const reason = (body?.error as { message?: string } | undefined)?.message ?? "no reason given";
    console.error(`generate-strategy: provision-machine answered ${response.status} user_id=${userId}: ${reason}`);
    return {
      status: "not_provisioned",
      message: `no machine is provisioned yet: provisioning was refused (HTTP ${response.status}: ${reason})`,
    };
  }
  const machineId = body?.machineId;
  return typeof machineId === "string"
    ? { status: "provisioned", machineId }
    : { status: "provisioning", message: "the machine is being provisioned" };
}
