// analyze-signal: a worker machine asks the model to judge one triggered signal (or its open position);
// the decision is validated against the decision schema and the live context, then recorded. Its backtest
// form (backtest.ts) judges a signal a user's backtest holds in memory: same prompt, model and checks,
// nothing recorded.
import { authenticate, type Caller, isUuid, requireRole } from "../_shared/auth.ts";
import { reserveTokens, settleTokens } from "../_shared/budget.ts";
import { reportModelOutcome } from "../_shared/service_health.ts";
import { checkDecisionInContext, type Decision, GEMINI_DECISION_SCHEMA, validateDecision } from "../_shared/decision.ts";
import { supabaseEnv } from "../_shared/env.ts";
import { estimateTokens, GeminiClient, geminiConfigFromEnv, ModelError } from "../_shared/gemini.ts";
import { HttpError, invalidBody, jsonResponse, postHandler, readJsonObject } from "../_shared/http.ts";
import { serviceClient } from "../_shared/supabase.ts";
import { type AnalysisContext, parseBacktest } from "./backtest.ts";
import { type MarketData, marketSnapshot, parseMarketData } from "./market_data.ts";
import { buildPrompt, buildSystemInstruction, type PastAnalysis, type PositionContext } from "./prompt.ts";

const MAX_BODY_BYTES = 1_000_000;
const MAX_OUTPUT_TOKENS = 1024;
const HISTORY_ENTRIES = 3;

export const handler = postHandler("analyze-signal", async (req) => {
  const env = supabaseEnv();
  const caller = await authenticate(req);
  const body = await readJsonObject(req, MAX_BODY_BYTES);
  if ("backtest" in body) return await analyzeBacktest(caller, body);
  const fields = ["traderId", "signalId", "marketData", "requestId"];
  const unknown = Object.keys(body).filter((key) => !fields.includes(key));
  if (unknown.length) throw invalidBody(`unknown field(s): ${unknown.join(", ")}; expected ${fields.join(", ")}`);
  if (!isUuid(body.traderId)) throw invalidBody("traderId is required and must be a UUID");
  if (!isUuid(body.signalId)) throw invalidBody("signalId is required and must be a UUID");
  // The caller's id for this analysis: a retry with the same requestId returns the recorded decision
  // instead of asking (and paying for) the model again.
  if (body.requestId !== undefined && !isUuid(body.requestId)) throw invalidBody("requestId must be a UUID");
  const requestId = body.requestId as string | undefined;
  const market = parseMarketData(body.marketData);
  requireRole(caller, ["trader_machine", "service_role"], "analyze signals");
  const db = serviceClient(env);

  const { data: trader, error: traderError } = await db
    .from("traders")
    .select("id, user_id, name, ai_instructions, status")
    .eq("id", body.traderId)
    .maybeSingle();
  if (traderError) throw new Error(`reading traders failed: ${traderError.message}`);
  if (!trader) throw new HttpError(404, "trader_not_found", `trader ${body.traderId} does not exist`);
  if (caller.role === "trader_machine") {
    if (trader.user_id !== caller.userId) {
      throw new HttpError(403, "forbidden", `trader ${trader.id} belongs to another user`);
    }
    const { data: machine, error: machineError } = await db
      .from("fly_machines")
      .select("status")
      .eq("user_id", caller.userId)
      .eq("machine_id", caller.machineId)
      .neq("status", "destroyed")
      .maybeSingle();
    if (machineError) throw new Error(`reading fly_machines failed: ${machineError.message}`);
    if (!machine) throw new HttpError(403, "forbidden", `machine ${caller.machineId} is not a live machine of this user`);
  }

  const [signalResult, positionResult, historyResult] = await Promise.all([
    db.from("signals").select("id, trader_id, symbol, status, trigger_price, created_at")
      .eq("id", body.signalId).eq("user_id", trader.user_id).maybeSingle(),
    db.from("positions").select("side, entry_price, size, stop_loss, take_profit, opened_at")
      .eq("signal_id", body.signalId).eq("user_id", trader.user_id).eq("status", "open").maybeSingle(),
    db.from("analysis_history").select("timestamp, decision, confidence, reasoning")
      .eq("signal_id", body.signalId).eq("user_id", trader.user_id)
      .order("timestamp", { ascending: false }).limit(HISTORY_ENTRIES),
  ]);
  for (const result of [signalResult, positionResult, historyResult]) {
    if (result.error) throw new Error(`reading the signal's context failed: ${result.error.message}`);
  }
  const signal = signalResult.data;
  if (!signal || signal.trader_id !== trader.id) {
    throw new HttpError(404, "signal_not_found", `signal ${body.signalId} does not exist for trader ${trader.id}`);
  }
  if (signal.status === "closed") throw new HttpError(409, "signal_closed", `signal ${signal.id} is closed`);
  if (signal.symbol !== market.symbol) {
    throw invalidBody(`marketData.symbol is ${market.symbol} but signal ${signal.id} is for ${signal.symbol}`);
  }
  if (requestId) {
    const recorded = await recordedAnalysis(db, requestId, signal.id);
    if (recorded) return recorded;
  }
  const row = positionResult.data;
  const position: PositionContext | null = row
    ? {
      side: row.side,
      entryPrice: Number(row.entry_price),
      size: Number(row.size),
      stopLoss: row.stop_loss === null ? null : Number(row.stop_loss),
      takeProfit: row.take_profit === null ? null : Number(row.take_profit),
      openedAt: row.opened_at,
    }
    : null;

  const result = await judge(db, trader.user_id, signal.id, {
    trader: { name: trader.name, aiInstructions: trader.ai_instructions },
    signal: { status: signal.status, triggerPrice: Number(signal.trigger_price), createdAt: signal.created_at },
    position,
    history: (historyResult.data ?? []) as PastAnalysis[],
  }, market);
  const analysis = result.value;
  const { data: saved, error: insertError } = await db
    .from("analysis_history")
    .insert({
      ...(requestId ? { id: requestId } : {}),
      signal_id: signal.id,
      trader_id: trader.id,
      user_id: trader.user_id,
      decision: analysis.decision,
      reasoning: analysis.reasoning,
      confidence: analysis.confidence,
      market_data: marketSnapshot(market),
      metadata: analysis.metadata,
      model: result.model,
      prompt_tokens: result.usage.promptTokens,
      completion_tokens: result.usage.completionTokens,
    })
    .select("id")
    .single();
  if (insertError?.code === "23505" && requestId) {
    // A concurrent duplicate of this request recorded first: answer with what it recorded.
    const recorded = await recordedAnalysis(db, requestId, signal.id);
    if (recorded) return recorded;
  }
  if (insertError) throw new Error(`recording the analysis failed: ${insertError.code} ${insertError.message}`);

  return jsonResponse({
    success: true,
    analysis: {
      decision: analysis.decision,
      reasoning: analysis.reasoning,
      confidence: analysis.confidence,
      metadata: analysis.metadata,
    },
    analysisId: saved.id,
    usage: { promptTokens: result.usage.promptTokens, completionTokens: result.usage.completionTokens, model: result.model },
  });
});

/** The backtest form: `{backtest, marketData}` from the signed-in user, answered and not recorded. */
async function analyzeBacktest(caller: Caller, body: Record<string, unknown>): Promise<Response> {
  const fields = ["backtest", "marketData"];
  const unknown = Object.keys(body).filter((key) => !fields.includes(key));
  if (unknown.length) throw invalidBody(`a backtest request has only ${fields.join(" and ")}; unknown field(s): ${unknown.join(", ")}`);
  const context = parseBacktest(body.backtest);
  const market = parseMarketData(body.marketData);
  requireRole(caller, ["authenticated"], "analyze backtest signals");
  const result = await judge(serviceClient(supabaseEnv()), caller.userId as string, "backtest", context, market);
  const analysis = result.value;
  return jsonResponse({
    success: true,
    analysis: { decision: analysis.decision, reasoning: analysis.reasoning, confidence: analysis.confidence, metadata: analysis.metadata },
    usage: { promptTokens: result.usage.promptTokens, completionTokens: result.usage.completionTokens, model: result.model },
    backtest: true,
  });
}

/**
 * The model's decision on a signal in `context`, validated against the decision schema and the context; the
 * tokens reserved from `userId`'s daily budget before and settled after (429 when the budget is used up).
 */
async function judge(
  db: ReturnType<typeof serviceClient>,
  userId: string,
  what: string,
  context: AnalysisContext,
  market: MarketData,
) {
  const gemini = new GeminiClient(geminiConfigFromEnv());
  const { position } = context;
  const systemInstruction = buildSystemInstruction(position);
  const prompt = buildPrompt(context.trader, context.signal, position, context.history, market);
  const live = { lastPrice: market.ticker.lastPrice, position };
  const validate = (value: unknown) => {
    const shape = validateDecision(value);
    return shape.ok ? checkDecisionInContext(shape.value, live) : shape;
  };
  const reserved = 2 * (estimateTokens(systemInstruction + prompt) + MAX_OUTPUT_TOKENS) + MAX_OUTPUT_TOKENS;
  const reservation = await reserveTokens(db, userId, reserved);
  let result;
  try {
    result = await gemini.generate<Decision>({
      systemInstruction,
      prompt,
      responseSchema: GEMINI_DECISION_SCHEMA,
      validate,
      maxOutputTokens: MAX_OUTPUT_TOKENS,
      temperature: 0.1,
    });
  } catch (error) {
    await settleTokens(db, reservation, error instanceof ModelError ? error.usage : { promptTokens: 0, completionTokens: 0 });
    await reportModelOutcome(db, error);
    if (error instanceof ModelError) {
      console.error(`analyze-signal: model failed signal_id=${what} failure=${error.failure} attempts=${error.attempts}: ${error.message}`);
      throw new HttpError(502, error.failure, `the AI model failed to analyse signal ${what}: ${error.message}`);
    }
    throw error;
  }
  await settleTokens(db, reservation, result.usage);
  await reportModelOutcome(db);
  return result;
}

/** The response for an analysis already recorded under `requestId`, or null if there is none. */
async function recordedAnalysis(
  db: ReturnType<typeof serviceClient>,
  requestId: string,
  signalId: string,
): Promise<Response | null> {
  const { data: row, error } = await db
    .from("analysis_history")
    .select("id, signal_id, decision, reasoning, confidence, metadata, model, prompt_tokens, completion_tokens")
    .eq("id", requestId)
    .maybeSingle();
  if (error) throw new Error(`reading analysis ${requestId} failed: ${error.message}`);
  if (!row) return null;
  if (row.signal_id !== signalId) {
    throw new HttpError(409, "request_id_reused", `requestId ${requestId} was used for another signal`);
  }
  return jsonResponse({
    success: true,
    analysis: { decision: row.decision, reasoning: row.reasoning, confidence: row.confidence, metadata: row.metadata ?? {} },
    analysisId: row.id,
    usage: { promptTokens: row.prompt_tokens ?? 0, completionTokens: row.completion_tokens ?? 0, model: row.model },
    replayed: true,
  });
}
