// notify: deliver due notifications and operator alerts beyond the app, service_role only (pg_cron calls it;
// operators may too). Claims due deliveries (public.claim_notification_deliveries: each is claimed by one run
// for `leaseSecs`), sends them with bounded concurrency, and records each outcome once
// (public.finish_notification_delivery: delivered, retried with backoff, failed, or skipped). A run that dies
// mid-way leaves its claims to lapse; the next run takes them over.
import { authenticate, requireRole } from "../_shared/auth.ts";
import { optionalEnv, positiveIntEnv, supabaseEnv } from "../_shared/env.ts";
import { invalidBody, jsonResponse, postHandler, readJsonObject } from "../_shared/http.ts";
import { mapLimited, rejectUnknownFields } from "../_shared/machines.ts";
import { serviceClient } from "../_shared/supabase.ts";
import { type ClaimedDelivery, type Outcome, redact, send, type Targets } from "./delivery.ts";

const MAX_BODY_BYTES = 4 * 1024;
const SEND_CONCURRENCY = 8;

function integerField(body: Record<string, unknown>, name: string, fallback: number, min: number, max: number): number {
  const value = body[name] === undefined ? fallback : body[name];
  if (!Number.isInteger(value) || (value as number) < min || (value as number) > max) {
    throw invalidBody(`${name} must be an integer between ${min} and ${max}`);
  }
  return value as number;
}

function targets(): Targets {
  const botToken = Deno.env.get("OPERATOR_TELEGRAM_BOT_TOKEN");
  const chatId = Deno.env.get("OPERATOR_TELEGRAM_CHAT_ID");
  return {
    telegramApiUrl: optionalEnv("TELEGRAM_API_URL", "https://api.telegram.org").replace(/\/+$/, ""),
    timeoutMs: positiveIntEnv("NOTIFY_TIMEOUT_MS", 10_000),
    operatorWebhookUrl: Deno.env.get("OPERATOR_WEBHOOK_URL") || null,
    operatorTelegram: botToken && chatId ? { botToken, chatId } : null,
  };
}

export const handler = postHandler("notify", async (req) => {
  const env = supabaseEnv();
  const caller = await authenticate(req);
  const body = await readJsonObject(req, MAX_BODY_BYTES);
  rejectUnknownFields(body, ["maxDeliveries", "leaseSecs"]);
  const maxDeliveries = integerField(body, "maxDeliveries", 100, 1, 500);
  const leaseSecs = integerField(body, "leaseSecs", 60, 5, 3600);
  requireRole(caller, ["service_role"], "deliver notifications");
  const db = serviceClient(env);
  const { data, error } = await db.rpc("claim_notification_deliveries", { max_deliveries: maxDeliveries, lease_secs: leaseSecs });
  if (error) throw new Error(`claim_notification_deliveries failed: ${error.code} ${error.message}`);
  const claimed = (data ?? []) as ClaimedDelivery[];
  const to = targets();
  const outcomes = await mapLimited(claimed, SEND_CONCURRENCY, async (delivery) => {
    let result: Outcome;
    try {
      result = await send(delivery, to);
    } catch (cause) {
      result = { outcome: "retry", error: redact((cause as Error).message), retryAfterSecs: null };
    }
    const { data: status, error: finishError } = await db.rpc("finish_notification_delivery", {
      delivery_id: delivery.delivery_id,
      outcome: result.outcome,
      error: "error" in result ? result.error : null,
      retry_after_secs: result.outcome === "retry" ? result.retryAfterSecs : null,
      provider_message_id: result.outcome === "delivered" ? result.providerMessageId : null,
    });
    if (finishError) {
      // The claim lapses and the delivery is tried again; say so, since a sent message may be sent twice.
      console.error(`notify: recording delivery_id=${delivery.delivery_id} failed: ${finishError.code} ${finishError.message}`);
      return "unrecorded";
    }
    if (result.outcome !== "delivered") {
      console.warn(`notify: delivery_id=${delivery.delivery_id} channel=${delivery.channel} ${status}: ${"error" in result ? result.error : ""}`);
    }
    return (status as string | null) ?? "lapsed";
  });
  const count = (status: string) => outcomes.filter((outcome) => outcome === status).length;
  return jsonResponse({
    claimed: claimed.length,
    delivered: count("delivered"),
    retrying: count("pending"),
    failed: count("failed"),
    skipped: count("skipped"),
    unrecorded: count("unrecorded") + count("lapsed"),
  });
});
