// Daily AI token budgets: reserve an upper bound before calling the model, settle the real usage after
// (public.reserve_ai_tokens / settle_ai_tokens, migrations 20261120230000 and 20261205041000).
import type { SupabaseClient } from "npm:@supabase/supabase-js@2.119.0";
import { HttpError } from "./http.ts";
import { DEFAULT_GEMINI_MODEL, type Usage } from "./gemini.ts";
import { optionalEnv } from "./env.ts";

export interface Reservation {
  userId: string;
  usageDate: string;
  tokens: number;
  tier: string;
  dailyTokens: number;
}

function secondsUntilNextUtcMonth(now: Date): number {
  const next = Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1);
  return Math.max(1, Math.ceil((next - now.getTime()) / 1000));
}

function secondsUntilUtcMidnight(now: Date): number {
  const midnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1);
  return Math.max(1, Math.ceil((midnight - now.getTime()) / 1000));
}

/**
 * Reserve `tokens` of the user's budget for today; 429 with Retry-After when it would be exceeded, or when the
 * user's monthly cost budget is used up (AI calls pause until the budget is raised or the month ends).
 */
export async function reserveTokens(db: SupabaseClient, userId: string, tokens: number): Promise<Reservation> {
  const { data, error } = await db.rpc("reserve_ai_tokens", { user_id: userId, tokens });
  if (error) {
    if (error.code === "P0002") throw new HttpError(404, "user_not_found", `user ${userId} has no account row`);
    throw new Error(`reserve_ai_tokens failed: ${error.code} ${error.message}`);
  }
  const result = data as {
    granted: boolean;
    reason: string | null;
    usage_date: string;
    tier: string;
    daily_tokens: number;
    used_tokens: number;
    total_cost_usd?: number;
    monthly_budget_usd?: number;
  };
  if (!result.granted && result.reason === "cost_budget_exceeded") {
    throw new HttpError(
      429,
      "budget_exhausted",
      `this month's cost (${Number(result.total_cost_usd).toFixed(2)} USD) has reached the monthly budget of ` +
        `${result.monthly_budget_usd} USD; AI calls are paused until the budget is raised or the month ends`,
      { "Retry-After": String(secondsUntilNextUtcMonth(new Date())) },
    );
  }
  if (!result.granted) {
    const remaining = Math.max(0, result.daily_tokens - result.used_tokens);
    throw new HttpError(
      429,
      "budget_exhausted",
      `the daily AI budget of the '${result.tier}' tier (${result.daily_tokens} tokens) has ${remaining} tokens left, ` +
        `and this request may need up to ${tokens}; it resets at 00:00 UTC`,
      { "Retry-After": String(secondsUntilUtcMidnight(new Date())) },
    );
  }
  return { userId, usageDate: result.usage_date, tokens, tier: result.tier, dailyTokens: result.daily_tokens };
}

/**
 * Release the reservation and record what the call used, priced at the configured model's price. Never
 * throws: accounting must not fail a call.
 */
export async function settleTokens(db: SupabaseClient, reservation: Reservation, usage: Usage): Promise<void> {
  const { error } = await db.rpc("settle_ai_tokens", {
    user_id: reservation.userId,
    usage_date: reservation.usageDate,
    reserved_tokens: reservation.tokens,
    prompt_tokens: usage.promptTokens,
    completion_tokens: usage.completionTokens,
    model: optionalEnv("GEMINI_MODEL", DEFAULT_GEMINI_MODEL),
  });
  if (error) {
    console.error(`settle_ai_tokens failed user_id=${reservation.userId}: ${error.code} ${error.message}`);
  }
}
