// generate-strategy end to end below the gateway: the handler, real PostgREST and Postgres, the Gemini
// stand-in. Bad bodies and tokens, the saved trader, the machine outcome, model faults and the budget.
import assert from "node:assert/strict";
import catalog from "../_shared/signal_helpers.json" with { type: "json" };
import { handler } from "../generate-strategy/handler.ts";
import {
  createMachine, createUser, deleteUser, geminiRequests, json, post, spendBudget, sql, stackTest, type TestUser,
  usageOf, useGeminiKey,
} from "./helpers.ts";

const URL = "http://local/generate-strategy";
const DESCRIPTION = "Buy BTC and ETH on the 1h chart when RSI drops below 25 and volume spikes 3x";

async function withUser(fn: (user: TestUser) => Promise<void>): Promise<void> {
  const user = await createUser();
  try {
    await fn(user);
  } finally {
    await deleteUser(user);
  }
}

stackTest("generate-strategy: saves the trader even when provisioning is refused, and says there is no machine", () =>
  withUser(async (user) => {
    const key = await useGeminiKey();

    const response = await handler(post(URL, { description: DESCRIPTION, name: "Dip buyer" }, user.jwt));

    assert.equal(response.status, 200);
    const body = await json(response);
    assert.equal(body.success, true);
    assert.equal(body.trader.name, "Dip buyer");
    assert.match(body.trader.signalCode, /^def check_signal\(symbol, ticker, klines\):/m);
    assert.match(body.trader.signalCode, /get_latest_rsi\(k, 14\)/);
    assert.deepEqual(body.trader.timeframes, ["1h"]);
    assert.equal(body.trader.recommendedInterval, "1h_close");
    assert.equal(body.machineId, undefined);
    assert.equal(body.machine.status, "not_provisioned");
    assert.match(body.machine.message, /^no machine is provisioned yet: provisioning was refused \(HTTP 403: .*no active subscription\)$/);
    const [row] = await sql`select user_id, name, signal_code, ai_instructions, timeframes, check_interval, symbols,
                                   description from public.traders where id = ${body.trader.id}`;
    assert.equal(row.user_id, user.id);
    assert.equal(row.signal_code, body.trader.signalCode);
    assert.deepEqual(row.symbols, ["BTCUSDT", "ETHUSDT"]);
    assert.equal(row.description, DESCRIPTION);
    const usage = await usageOf(user);
    assert.equal(usage.reserved, 0);
    assert.equal(usage.prompt, body.usage.promptTokens);
    assert.equal(usage.completion, body.usage.completionTokens);
    // The prompt documents every helper of the worker's catalog, signature for signature.
    const [sent] = await geminiRequests(key);
    const system = sent.systemInstruction.parts[0].text as string;
    for (const helper of catalog.helpers) assert.ok(system.includes(`- ${helper.signature}: ${helper.doc}`), helper.name);
    assert.ok(system.includes("def check_signal(symbol: str, ticker: dict, klines: dict[str, Klines]) -> bool"));
  }));

stackTest("generate-strategy: save false only shows the strategy: no trader, no machine, tokens charged", () =>
  withUser(async (user) => {
    await useGeminiKey();

    const response = await handler(post(URL, { description: DESCRIPTION, save: false }, user.jwt));

    assert.equal(response.status, 200);
    const body = await json(response);
    assert.equal(body.saved, false);
    assert.equal(body.trader.id, null);
    assert.match(body.trader.signalCode, /get_latest_rsi\(k, 14\)/);
    assert.deepEqual(body.trader.symbols, ["BTCUSDT", "ETHUSDT"]);
    assert.equal(body.machine, undefined);
    assert.equal((await sql`select count(*)::int as n from public.traders where user_id = ${user.id}`)[0].n, 0);
    assert.equal((await usageOf(user)).prompt, body.usage.promptTokens);
    const refused = await handler(post(URL, { description: DESCRIPTION, save: "no" }, user.jwt));
    assert.equal(refused.status, 400);
    assert.match((await json(refused)).error.message, /save must be a boolean/);
  }));

stackTest("generate-strategy: a user with a live machine gets its id back", () =>
  withUser(async (user) => {
    await useGeminiKey();
    const machineId = await createMachine(user);

    const body = await json(await handler(post(URL, { description: "MACD bullish cross on 4h for SOL" }, user.jwt)));

    assert.equal(body.machineId, machineId);
    assert.equal(body.machine.status, "existing");
    assert.deepEqual(body.trader.symbols, ["SOLUSDT"]);
  }));

stackTest("generate-strategy: bad bodies are 400 naming the field", () =>
  withUser(async (user) => {
    const cases: [unknown, string][] = [
      [{}, "description is required and must be a string"],
      [{ description: "short" }, "description must be 10-4000 characters, was 5"],
      [{ description: "x".repeat(4001) }, "description must be 10-4000 characters, was 4001"],
      [{ description: "Buy the dip\u0000 please" }, "description must not contain control characters"],
      [{ description: DESCRIPTION, name: 7 }, "name must be a string when given"],
      [{ description: DESCRIPTION, name: "  " }, "name must be 1-100 characters, was 0"],
      [{ description: DESCRIPTION, name: "two\nlines" }, "name must be one line without control characters"],
      [{ description: DESCRIPTION, userId: user.id }, "unknown field(s): userId; expected description, optional name and save"],
      ["[1, 2]", "the body must be a JSON object"],
      ["{not json", "the body is not valid JSON"],
    ];
    for (const [body, message] of cases) {
      const response = await handler(post(URL, body, user.jwt));
      assert.equal(response.status, 400, message);
      const error = (await json(response)).error;
      assert.equal(error.code, "invalid_body");
      assert.ok(error.message.startsWith(message), `${error.message} / ${message}`);
    }
    const [{ count }] = await sql`select count(*)::int as count from public.traders where user_id = ${user.id}`;
    assert.equal(count, 0);
  }));

stackTest("generate-strategy: tokens are checked: none 401, forged 401, machine 403", () =>
  withUser(async (user) => {
    const none = await handler(post(URL, { description: DESCRIPTION }));
    const forged = await handler(post(URL, { description: DESCRIPTION }, user.jwt.slice(0, -4) + "AAAA"));
    const machine = await handler(post(URL, { description: DESCRIPTION }, await user.machineJwt("m1")));

    assert.equal(none.status, 401);
    assert.equal((await json(none)).error.code, "missing_authorization");
    assert.equal(forged.status, 401);
    assert.equal((await json(forged)).error.message, "invalid JWT signature");
    assert.equal(machine.status, 403);
    assert.equal((await json(machine)).error.code, "forbidden");
  }));

stackTest("generate-strategy: GET is 405 and OPTIONS answers the CORS preflight", async () => {
  const get = await handler(new Request(URL));
  const options = await handler(new Request(URL, { method: "OPTIONS" }));

  assert.equal(get.status, 405);
  assert.equal((await json(get)).error.code, "method_not_allowed");
  assert.equal(options.status, 200);
  assert.equal(options.headers.get("access-control-allow-origin"), "*");
  await options.body?.cancel();
});

stackTest("generate-strategy: invalid model output twice is 502, nothing saved, tokens still charged", () =>
  withUser(async (user) => {
    await useGeminiKey([{ kind: "schema_violation" }, { kind: "schema_violation" }]);

    const response = await handler(post(URL, { description: DESCRIPTION }, user.jwt));

    assert.equal(response.status, 502);
    const error = (await json(response)).error;
    assert.equal(error.code, "model_invalid_output");
    assert.match(error.message, /timeframes\.0 must be equal to one of the allowed values/);
    const [{ count }] = await sql`select count(*)::int as count from public.traders where user_id = ${user.id}`;
    assert.equal(count, 0);
    const usage = await usageOf(user);
    assert.equal(usage.reserved, 0);
    assert.ok(usage.prompt > 0);
  }));

stackTest("generate-strategy: a model outage is 502 model_unavailable", () =>
  withUser(async (user) => {
    await useGeminiKey(Array(4).fill({ kind: "unavailable" }));

    const response = await handler(post(URL, { description: DESCRIPTION }, user.jwt));

    assert.equal(response.status, 502);
    assert.equal((await json(response)).error.code, "model_unavailable");
  }));

stackTest("generate-strategy: an exhausted daily budget is 429 with Retry-After, and the model is not called", () =>
  withUser(async (user) => {
    const key = await useGeminiKey();
    await spendBudget(user, 100);

    const response = await handler(post(URL, { description: DESCRIPTION }, user.jwt));

    assert.equal(response.status, 429);
    const error = (await json(response)).error;
    assert.equal(error.code, "budget_exhausted");
    assert.match(error.message, /'pro' tier \(1000000 tokens\) has 100 tokens left/);
    const retryAfter = Number(response.headers.get("retry-after"));
    assert.ok(retryAfter > 0 && retryAfter <= 86400);
    assert.equal((await geminiRequests(key)).length, 0);
  }));
