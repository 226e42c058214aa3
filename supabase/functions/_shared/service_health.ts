// Report whether an outside service answered (public.report_service_health): pg_cron alerts the operator when
// one keeps failing (Gemini for 10 minutes), and the next success resolves the alert.
import type { SupabaseClient } from "npm:@supabase/supabase-js@2.119.0";
import { ModelError } from "./gemini.ts";

/** Never throws: health reporting must not fail the call it describes. */
export async function reportServiceHealth(db: SupabaseClient, service: "gemini", ok: boolean, detail?: string): Promise<void> {
  const { error } = await db.rpc("report_service_health", { service, ok, detail: detail ?? null });
  if (error) console.error(`report_service_health(${service}) failed: ${error.code} ${error.message}`);
}

/** After a model call: a success, or a ModelError saying the model was unavailable, counts; bad output does not. */
export async function reportModelOutcome(db: SupabaseClient, error: unknown = null): Promise<void> {
  if (error === null) return await reportServiceHealth(db, "gemini", true);
  if (error instanceof ModelError && error.failure === "model_unavailable") {
    await reportServiceHealth(db, "gemini", false, error.message);
  }
}
