// analyze-signal below the gateway: who may call it, market data validation, the recorded analysis,
// position context for re-analysis, model faults and the budget.
import assert from "node:assert/strict";
import { validateDecision } from "../_shared/decision.ts";
import { handler } from "../analyze-signal/handler.ts";
import {
  binanceKlines, createMachine, createSignal, createTrader, createUser, deleteUser, env, geminiRequests, json,
  mintJwt, openPosition, post, spendBudget, sql, stackTest, type TestUser, usageOf, useGeminiKey,
} from "./helpers.ts";

const URL = "http://local/analyze-signal";
const HOUR_MS = 3_600_000;
const NOW_MS = Date.UTC(2024, 0, 1);

interface Setup {
  user: TestUser;
  traderId: string;
  signalId: string;
  machineJwt: string;
}

function marketData(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    symbol: "BTCUSDT",
    timestamp: NOW_MS / 1000,
    ticker: { lastPrice: "42500.00", volume24h: "25000.5", priceChange24h: "-2.5" },
    klines: { "1h": binanceKlines(200, HOUR_MS, NOW_MS), "4h": binanceKlines(50, 4 * HOUR_MS, NOW_MS) },
    indicators: { rsi_1h: 27.5, macd_4h: { macd: 150.2, signal: 120.5, histogram: 29.7 } },
    ...overrides,
  };
}

async function withSignal(fn: (setup: Setup) => Promise<void>): Promise<void> {
  const user = await createUser();
  try {
    const traderId = await createTrader(user);
    const signalId = await createSignal(user, traderId);
    const machineJwt = await user.machineJwt(await createMachine(user));
    await fn({ user, traderId, signalId, machineJwt });
  } finally {
    await deleteUser(user);
  }
}

stackTest("analyze-signal: a machine gets a schema-valid decision, recorded in analysis_history", () =>
  withSignal(async ({ user, traderId, signalId, machineJwt }) => {
    const key = await useGeminiKey();

    const response = await handler(post(URL, { traderId, signalId, marketData: marketData() }, machineJwt));

    assert.equal(response.status, 200);
    const body = await json(response);
    assert.equal(body.success, true);
    assert.equal(validateDecision(body.analysis).ok, true);
    assert.equal(body.analysis.decision, "open_long");
    assert.ok(body.analysis.metadata.stopLoss < 42500 && 42500 < body.analysis.metadata.takeProfit);
    const [row] = await sql`select * from public.analysis_history where id = ${body.analysisId}`;
    assert.equal(row.signal_id, signalId);
    assert.equal(row.user_id, user.id);
    assert.equal(row.decision, "open_long");
    assert.deepEqual(row.metadata, body.analysis.metadata);
    assert.equal(row.model, env("GEMINI_MODEL") ?? "gemini-3.5-flash");
    assert.equal(row.prompt_tokens, body.usage.promptTokens);
    assert.equal(row.market_data.indicators.rsi_1h, 27.5);
    assert.equal(row.market_data.lastCandles["1h"].count, 200);
    assert.equal((await usageOf(user)).reserved, 0);
    // The prompt carries the trader's instructions, the allowed entries and a bounded slice of candles.
    const [sent] = await geminiRequests(key);
    const prompt = sent.contents[0].parts[0].text as string;
    assert.ok(prompt.includes("Buy oversold dips in an uptrend."));
    assert.ok(prompt.includes("Allowed decisions now: no_trade, watch, open_long, open_short"));
    assert.ok(prompt.includes("### 1h: 200 candles"));
    assert.ok(prompt.length < 30_000, `prompt of ${prompt.length} chars`);
  }));

stackTest("analyze-signal: an open position is re-analysed with position decisions only", () =>
  withSignal(async ({ user, traderId, signalId, machineJwt }) => {
    const key = await useGeminiKey();
    await openPosition(user, signalId, "long", 40000, 39000, 46000);
    const bullish = { rsi_1h: 45, macd_4h: { macd: 1, signal: 0.5, histogram: 0.5 } };

    const body = await json(await handler(post(URL, { traderId, signalId, marketData: marketData({ indicators: bullish }) }, machineJwt)));

    assert.equal(body.analysis.decision, "update_stop_loss");
    assert.equal(body.analysis.metadata.newStopLoss, 40000);
    const prompt = (await geminiRequests(key))[0].contents[0].parts[0].text as string;
    assert.match(prompt, /^Position: \{"side":"long","entryPrice":40000/m);
    assert.ok(prompt.includes("Allowed decisions now: watch, close, partial_close"));
  }));

stackTest("analyze-signal: a user JWT and another user's machine are 403; a destroyed machine's token is 401", () =>
  withSignal(async ({ user, traderId, signalId }) => {
    await useGeminiKey();
    const rival = await createUser();
    try {
      const rivalMachine = await rival.machineJwt(await createMachine(rival));
      const destroyed = await user.machineJwt(await createMachine(user, "destroyed"));
      const request = { traderId, signalId, marketData: marketData() };

      const asUser = await handler(post(URL, request, user.jwt));
      const asRival = await handler(post(URL, request, rivalMachine));
      const asDestroyed = await handler(post(URL, request, destroyed));

      assert.equal(asUser.status, 403);
      assert.match((await json(asUser)).error.message, /role 'authenticated' may not analyze signals/);
      assert.equal(asRival.status, 403);
      assert.match((await json(asRival)).error.message, /belongs to another user/);
      assert.equal(asDestroyed.status, 401);
      assert.equal((await json(asDestroyed)).error.code, "machine_token_revoked");
      const [{ count }] = await sql`select count(*)::int as count from public.analysis_history where signal_id = ${signalId}`;
      assert.equal(count, 0);
    } finally {
      await deleteUser(rival);
    }
  }));

stackTest("analyze-signal: service_role may analyse any user's signal", () =>
  withSignal(async ({ traderId, signalId }) => {
    await useGeminiKey();
    const service = await mintJwt({ role: "service_role" });

    const response = await handler(post(URL, { traderId, signalId, marketData: marketData() }, service));

    assert.equal(response.status, 200);
    await response.body?.cancel();
  }));

stackTest("analyze-signal: unknown trader and a signal of another trader are 404, a closed signal 409", () =>
  withSignal(async ({ user, traderId, signalId, machineJwt }) => {
    await useGeminiKey();
    const otherTrader = await createTrader(user);
    const otherSignal = await createSignal(user, otherTrader, "ETHUSDT");

    const noTrader = await handler(post(URL, { traderId: crypto.randomUUID(), signalId, marketData: marketData() }, machineJwt));
    const wrongSignal = await handler(post(URL, { traderId, signalId: otherSignal, marketData: marketData() }, machineJwt));
    await sql`update public.signals set status = 'closed', closed_at = now() where id = ${signalId}`;
    const closed = await handler(post(URL, { traderId, signalId, marketData: marketData() }, machineJwt));

    assert.equal(noTrader.status, 404);
    assert.equal((await json(noTrader)).error.code, "trader_not_found");
    assert.equal(wrongSignal.status, 404);
    assert.equal((await json(wrongSignal)).error.code, "signal_not_found");
    assert.equal(closed.status, 409);
    assert.equal((await json(closed)).error.code, "signal_closed");
  }));

stackTest("analyze-signal: invalid bodies are 400 naming the field and the reason", () =>
  withSignal(async ({ traderId, signalId, machineJwt }) => {
    const klines = binanceKlines(3, HOUR_MS, NOW_MS);
    const cases: [Record<string, unknown>, string][] = [
      [{ traderId: "x", signalId, marketData: marketData() }, "traderId is required and must be a UUID"],
      [{ traderId, signalId }, "marketData is required and must be an object"],
      [{ traderId, signalId, marketData: marketData(), extra: 1 }, "unknown field(s): extra"],
      [{ traderId, signalId, marketData: marketData({ symbol: "btc-usdt" }) }, "marketData.symbol must be a Binance symbol"],
      [{ traderId, signalId, marketData: marketData({ symbol: "ETHUSDT" }) }, "marketData.symbol is ETHUSDT but signal"],
      [{ traderId, signalId, marketData: marketData({ timestamp: NOW_MS }) }, "marketData.timestamp must be Unix seconds"],
      [{ traderId, signalId, marketData: marketData({ ticker: { volume24h: "1" } }) }, "marketData.ticker.lastPrice is required"],
      [{ traderId, signalId, marketData: marketData({ ticker: { lastPrice: "abc" } }) }, "marketData.ticker.lastPrice must be a decimal number"],
      [{ traderId, signalId, marketData: marketData({ klines: {} }) }, "marketData.klines must hold 1-8 timeframes, held 0"],
      [{ traderId, signalId, marketData: marketData({ klines: { "7m": klines } }) }, 'marketData.klines has an unknown timeframe "7m"'],
      [{ traderId, signalId, marketData: marketData({ klines: { "1h": [[1, "1", "1", "1"]] } }) }, "marketData.klines.1h[0] must be a Binance kline array"],
      [{ traderId, signalId, marketData: marketData({ klines: { "1h": [klines[1], klines[0]] } }) }, "marketData.klines.1h[1][0] (openTime) must be later"],
      [{ traderId, signalId, marketData: marketData({ klines: { "1h": [[NOW_MS + 1, ...klines[0].slice(1)]] } }) }, "marketData.klines.1h[0][0] (openTime) is not aligned to 1h"],
      // Past JavaScript's Date range (8.64e15 ms): refused before any date is formatted.
      [{ traderId, signalId, marketData: marketData({ klines: { "1h": [[8_640_000_003_600_000, ...klines[0].slice(1)]] } }) }, "marketData.klines.1h[0][0] (openTime) must be Unix milliseconds between 2017 and 2100"],
      [{ traderId, signalId, marketData: marketData({ ticker: { lastPrice: "1e300" } }) }, "marketData.ticker.lastPrice must be at most 1e+18 in size"],
      [{ traderId, signalId, marketData: marketData({ klines: { "1h": [[NOW_MS, "10", "9", "11", "10", "1"]] } }) }, "marketData.klines.1h[0]: high must be the highest"],
      [{ traderId, signalId, marketData: marketData({ klines: { "1h": binanceKlines(1001, HOUR_MS, NOW_MS) } }) }, "marketData.klines.1h has 1001 klines; at most 1000"],
      [{ traderId, signalId, marketData: marketData({ indicators: { rsi: "high" } }) }, "marketData.indicators.rsi must be a number"],
      [{ traderId, signalId, marketData: marketData({ indicators: { "bad name!": 1 } }) }, "marketData.indicators has an invalid name"],
    ];
    for (const [body, message] of cases) {
      const response = await handler(post(URL, body, machineJwt));
      const error = (await json(response)).error;
      assert.equal(response.status, 400, `${message}: ${error.message}`);
      assert.ok(error.message.startsWith(message), `${error.message} / ${message}`);
    }
  }));

stackTest("analyze-signal: a body over 1 MB is 413", () =>
  withSignal(async ({ traderId, signalId, machineJwt }) => {
    const big = JSON.stringify({ traderId, signalId, marketData: marketData(), padding: "x".repeat(1_000_001) });

    const response = await handler(post(URL, big, machineJwt));

    assert.equal(response.status, 413);
    assert.equal((await json(response)).error.code, "body_too_large");
  }));

stackTest("analyze-signal: one schema violation is corrected; two are 502 and nothing is recorded", () =>
  withSignal(async ({ traderId, signalId, machineJwt }) => {
    await useGeminiKey([{ kind: "schema_violation" }]);
    const corrected = await handler(post(URL, { traderId, signalId, marketData: marketData() }, machineJwt));
    assert.equal(corrected.status, 200);
    await corrected.body?.cancel();

    await useGeminiKey([{ kind: "schema_violation" }, { kind: "malformed_json" }]);
    const failed = await handler(post(URL, { traderId, signalId, marketData: marketData() }, machineJwt));

    assert.equal(failed.status, 502);
    assert.equal((await json(failed)).error.code, "model_invalid_output");
    const [{ count }] = await sql`select count(*)::int as count from public.analysis_history where signal_id = ${signalId}`;
    assert.equal(count, 1);
  }));

stackTest("analyze-signal: the trader's owner pays; an exhausted budget is 429", () =>
  withSignal(async ({ user, traderId, signalId }) => {
    await useGeminiKey();
    await spendBudget(user, 10);
    const service = await mintJwt({ role: "service_role" });

    const response = await handler(post(URL, { traderId, signalId, marketData: marketData() }, service));

    assert.equal(response.status, 429);
    assert.equal((await json(response)).error.code, "budget_exhausted");
  }));

stackTest("analyze-signal: a retry with the same requestId replays the recorded decision without a second model call", () =>
  withSignal(async ({ signalId, traderId, machineJwt, user }) => {
    const key = await useGeminiKey();
    const requestId = crypto.randomUUID();
    const request = { traderId, signalId, marketData: marketData(), requestId };

    const first = await json(await handler(post(URL, request, machineJwt)));
    const second = await json(await handler(post(URL, request, machineJwt)));
    const otherSignal = await createSignal(user, traderId, "ETHUSDT");
    const reused = await handler(
      post(URL, { ...request, signalId: otherSignal, marketData: marketData({ symbol: "ETHUSDT" }) }, machineJwt),
    );

    assert.equal(first.analysisId, requestId);
    assert.equal(second.replayed, true);
    assert.deepEqual(second.analysis, first.analysis);
    assert.equal((await geminiRequests(key)).length, 1);
    const rows = await sql`select count(*)::int as n from public.analysis_history where signal_id = ${signalId}`;
    assert.equal(rows[0].n, 1);
    assert.equal(reused.status, 409);
    assert.equal((await json(reused)).error.code, "request_id_reused");
  }));

stackTest("analyze-signal: a used-up monthly cost budget pauses analysis (429 until next month) and tells the user once", () =>
  withSignal(async ({ user, traderId, signalId, machineJwt }) => {
    const key = await useGeminiKey();
    await sql`update public.fly_machines set memory_mb = 256 where user_id = ${user.id}`; // opens its billed interval
    await sql`update public.machine_usage set started_at = now() - interval '1 hour' where user_id = ${user.id}`;
    await sql`insert into public.cost_budgets (user_id, monthly_budget_usd) values (${user.id}, 0.0001)`;

    const first = await handler(post(URL, { traderId, signalId, marketData: marketData() }, machineJwt));
    const second = await handler(post(URL, { traderId, signalId, marketData: marketData() }, machineJwt));

    const error = (await json(first)).error;
    assert.equal(first.status, 429);
    assert.equal(error.code, "budget_exhausted");
    assert.match(error.message, /monthly budget of 0.0001 USD/);
    const now = new Date();
    const nextMonthSecs = (Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1) - now.getTime()) / 1000;
    assert.ok(Math.abs(Number(first.headers.get("retry-after")) - nextMonthSecs) < 5, "Retry-After runs to the next month");
    assert.equal(second.status, 429);
    await second.body?.cancel();
    assert.equal((await geminiRequests(key)).length, 0, "the model is not called");
    // The test's own signal notifies too (signal_new, by trigger since 20261205043000); the budget once.
    const notes = await sql`select kind::text from public.notifications where user_id = ${user.id} and kind <> 'signal_new'`;
    assert.deepEqual(notes.map((row) => row.kind), ["budget_exceeded"]);
  }));

stackTest("analyze-signal: a model that keeps failing is reported to service health; a success clears it", () =>
  withSignal(async ({ traderId, signalId, machineJwt }) => {
    await useGeminiKey([{ kind: "unavailable" }, { kind: "unavailable" }, { kind: "unavailable" }, { kind: "unavailable" }]);
    const failed = await handler(post(URL, { traderId, signalId, marketData: marketData() }, machineJwt));
    const [during] = await sql`select failing_since is not null as failing from private.service_health where service = 'gemini'`;
    await useGeminiKey();
    const ok = await handler(post(URL, { traderId, signalId, marketData: marketData() }, machineJwt));
    const [after] = await sql`select failing_since is null as clear, last_ok_at > now() - interval '1 minute' as fresh
                                 from private.service_health where service = 'gemini'`;

    assert.equal(failed.status, 502);
    await failed.body?.cancel();
    assert.equal(ok.status, 200);
    await ok.body?.cancel();
    assert.equal(during.failing, true);
    assert.deepEqual([after.clear, after.fresh], [true, true]);
  }));

// The backtest form: a user's backtest sends the signal's context itself; nothing is read or recorded.
function backtestContext(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    trader: { name: "RSI dip buyer", aiInstructions: "Buy oversold dips in an uptrend." },
    signal: { status: "new", triggerPrice: 42500, createdAt: "2024-01-01T00:00:00Z" },
    position: null,
    history: [],
    ...overrides,
  };
}

stackTest("analyze-signal backtest: the user gets the same decision a machine gets, counted in their budget and recorded nowhere", () =>
  withSignal(async ({ user, traderId, signalId, machineJwt }) => {
    const key = await useGeminiKey();
    const live = await json(await handler(post(URL, { traderId, signalId, marketData: marketData() }, machineJwt)));
    const before = await usageOf(user);
    const trader = { name: "test trader", aiInstructions: "Buy oversold dips in an uptrend." }; // createTrader's

    const response = await handler(post(URL, { backtest: backtestContext({ trader }), marketData: marketData() }, user.jwt));

    assert.equal(response.status, 200);
    const body = await json(response);
    assert.equal(body.backtest, true);
    assert.equal(body.analysisId, undefined);
    assert.deepEqual(body.analysis, live.analysis);
    const after = await usageOf(user);
    assert.equal(after.requests, before.requests + 1);
    assert.equal(after.prompt, before.prompt + body.usage.promptTokens);
    assert.equal(after.reserved, 0);
    const [{ count }] = await sql`select count(*)::int as count from public.analysis_history where user_id = ${user.id}`;
    assert.equal(count, 1); // the machine's, not the backtest's
    // The prompt is the live one: the same context and market data make the same text (the signal row's
    // trigger price and creation time are its own).
    const [livePrompt, backtestPrompt] = (await geminiRequests(key)).map((sent) => sent.contents[0].parts[0].text as string);
    const signalLine = /^Signal: status new, triggered at \S+ on \S+$/m;
    assert.match(livePrompt, /^Signal: status new, triggered at 42000 on /m);
    assert.match(backtestPrompt, /^Signal: status new, triggered at 42500 on 2024-01-01T00:00:00Z$/m);
    assert.equal(backtestPrompt.replace(signalLine, "SIGNAL"), livePrompt.replace(signalLine, "SIGNAL"));
  }));

stackTest("analyze-signal backtest: an open position and past analyses are judged with position decisions", () =>
  withSignal(async ({ user }) => {
    const key = await useGeminiKey();
    const bullish = { rsi_1h: 45, macd_4h: { macd: 1, signal: 0.5, histogram: 0.5 } };
    const context = backtestContext({
      signal: { status: "position_open", triggerPrice: 40000, createdAt: "2024-01-01T00:00:00Z" },
      position: { side: "long", entryPrice: 40000, size: 0.01, stopLoss: 39000, takeProfit: 46000, openedAt: "2024-01-01T00:00:01Z" },
      history: [{ timestamp: "2024-01-01T00:00:00Z", decision: "open_long", confidence: 70, reasoning: "Oversold." }],
    });

    const body = await json(await handler(post(URL, { backtest: context, marketData: marketData({ indicators: bullish }) }, user.jwt)));

    assert.equal(body.analysis.decision, "update_stop_loss");
    assert.equal(body.analysis.metadata.newStopLoss, 40000);
    const prompt = (await geminiRequests(key))[0].contents[0].parts[0].text as string;
    assert.match(prompt, /^Position: \{"side":"long","entryPrice":40000/m);
    assert.ok(prompt.includes("Allowed decisions now: watch, close, partial_close"));
    assert.ok(prompt.includes("Oversold."));
  }));

stackTest("analyze-signal backtest: machines and anon are refused, bad context is 400 naming the field, an empty budget 429", () =>
  withSignal(async ({ user, traderId, machineJwt }) => {
    await useGeminiKey();
    const request = { backtest: backtestContext(), marketData: marketData() };

    const asMachine = await handler(post(URL, request, machineJwt));
    const asAnon = await handler(post(URL, request, env("SUPABASE_ANON_KEY")));
    const mixed = await handler(post(URL, { ...request, traderId }, user.jwt));
    const badStatus = await handler(post(URL, { ...request, backtest: backtestContext({ signal: { status: "closed", triggerPrice: 1, createdAt: "2024-01-01T00:00:00Z" } }) }, user.jwt));
    const badPosition = await handler(post(URL, { ...request, backtest: backtestContext({ position: { side: "long" } }) }, user.jwt));
    const longHistory = await handler(post(URL, { ...request, backtest: backtestContext({ history: Array(4).fill({ timestamp: "2024-01-01T00:00:00Z", decision: "watch", confidence: 1, reasoning: "x" }) }) }, user.jwt));
    await spendBudget(user, 10);
    const broke = await handler(post(URL, request, user.jwt));

    assert.equal(asMachine.status, 403);
    assert.match((await json(asMachine)).error.message, /role 'trader_machine' may not analyze backtest signals/);
    assert.equal(asAnon.status, 403);
    await asAnon.body?.cancel();
    assert.equal(mixed.status, 400);
    assert.match((await json(mixed)).error.message, /unknown field\(s\): traderId/);
    assert.equal(badStatus.status, 400);
    assert.match((await json(badStatus)).error.message, /backtest\.signal\.status must be one of new, watching, position_open/);
    assert.equal(badPosition.status, 400);
    assert.match((await json(badPosition)).error.message, /backtest\.position: missing entryPrice/);
    assert.equal(longHistory.status, 400);
    assert.match((await json(longHistory)).error.message, /backtest\.history must be an array of at most 3/);
    assert.equal(broke.status, 429);
    assert.equal((await json(broke)).error.code, "budget_exhausted");
  }));
