// generate-strategy end to end below the gateway: the handler, real PostgREST and Postgres, the Gemini
// stand-in. Bad bodies and tokens, the saved trader, the machine outcome, model faults and the budget.
import assert from "node:assert/strict";
import catalog from "../_shared/signal_helpers.json" with { type: "json" };
import dialect from "../_shared/signal_dialect.json" with { type: "json" };
import { handler } from "../generate-strategy/handler.ts";
import {
  createMachine, createUser, deleteUser, env, geminiRequests, json, post, spendBudget, sql, stackTest, type TestUser,
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
    // ... and the sandbox's dialect, from the file the worker's compiler generates.
    for (const rule of dialect.rules) assert.ok(system.includes(`- ${rule}`), rule);
    assert.ok(system.includes(`- Builtins: ${dialect.builtins.join(" ")}.`));
    assert.ok(system.includes(`policy version ${dialect.policy_version}`));
    assert.ok(system.includes(".argmax") && system.includes("math.isnan"));
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
      ['{"description": "Buy BTC when \\ud800 RSI drops below 30"}', "description must be well-formed Unicode"],
      ['{"description": "Buy BTC when RSI drops below 30", "name": "\\udc00"}', "name must be well-formed Unicode"],
    ];
    for (const [body, message] of cases) {
      const response = await handler(post(URL, body, user.jwt));
      assert.equal(response.status, 400, message);
      const error = (await json(response)).error;
      assert.equal(error.code, "invalid_body");
      assert.ok(error.message.startsWith(message), `${error.message} / ${message}`);
    }
    // Invalid UTF-8 is refused whole, not stored with U+FFFD in its place.
    const encoder = new TextEncoder();
    const bytes = new Uint8Array([...encoder.encode(`{"description": "${DESCRIPTION} `), 0xff, 0xfe, ...encoder.encode('"}')]);
    const headers = { "content-type": "application/json", authorization: `Bearer ${user.jwt}` };
    const mangled = await handler(new Request(URL, { method: "POST", headers, body: bytes }));
    assert.deepEqual([mangled.status, (await json(mangled)).error.message], [400, "description must be valid UTF-8"]);
    const [{ count }] = await sql`select count(*)::int as count from public.traders where user_id = ${user.id}`;
    assert.equal(count, 0);
  }));

stackTest("generate-strategy: tokens are checked: none 401, forged 401, machine 403", () =>
  withUser(async (user) => {
    const none = await handler(post(URL, { description: DESCRIPTION }));
    const forged = await handler(post(URL, { description: DESCRIPTION }, user.jwt.slice(0, -4) + "AAAA"));
    const machine = await handler(post(URL, { description: DESCRIPTION }, await user.machineJwt(await createMachine(user))));

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

async function traderCount(user: TestUser): Promise<number> {
  return (await sql`select count(*)::int as n from public.traders where user_id = ${user.id}`)[0].n;
}

stackTest("generate-strategy: code the compiler refuses goes back to the model once with its message, then is saved", () =>
  withUser(async (user) => {
    const key = await useGeminiKey([{ kind: "refused_code" }]);

    const response = await handler(post(URL, { description: DESCRIPTION }, user.jwt));

    assert.equal(response.status, 200);
    const body = await json(response);
    assert.doesNotMatch(body.trader.signalCode, /class /);
    const requests = await geminiRequests(key);
    assert.equal(requests.length, 2);
    const correction = requests[1].contents.at(-1).parts[0].text as string;
    assert.match(correction, /The sandbox's compiler refused signalCode: line 1: classes are not allowed: write functions/);
    assert.equal(await traderCount(user), 1);
  }));

stackTest("generate-strategy: refused twice is 422 signal_code_rejected, nothing saved, tokens charged", () =>
  withUser(async (user) => {
    const key = await useGeminiKey([{ kind: "refused_code" }, { kind: "refused_code" }]);

    const response = await handler(post(URL, { description: DESCRIPTION }, user.jwt));

    assert.equal(response.status, 422);
    const error = (await json(response)).error;
    assert.equal(error.code, "signal_code_rejected");
    assert.match(error.message, /refused by the worker's compiler even after one correction: line 1: classes are not allowed/);
    assert.equal((await geminiRequests(key)).length, 2);
    assert.equal(await traderCount(user), 0);
    const usage = await usageOf(user);
    assert.equal(usage.reserved, 0);
    assert.ok(usage.prompt > 0);
  }));

stackTest("generate-strategy: code that fails on recorded candles is refused the same way, also without saving", () =>
  withUser(async (user) => {
    const key = await useGeminiKey([{ kind: "crashing_code" }, { kind: "crashing_code" }]);

    const response = await handler(post(URL, { description: DESCRIPTION, save: false }, user.jwt));

    assert.equal(response.status, 422);
    const error = (await json(response)).error;
    assert.equal(error.code, "signal_code_rejected");
    assert.match(error.message, /check_signal failed on recorded candles in \d+ of \d+ checks: BTCUSDT: line 3: IndexError/);
    const correction = (await geminiRequests(key))[1].contents.at(-1).parts[0].text as string;
    assert.match(correction, /signalCode failed when run on recorded candles/);
    assert.equal(await traderCount(user), 0);
  }));

stackTest("generate-strategy: a shape error and a compiler refusal each get their own correction", () =>
  withUser(async (user) => {
    const key = await useGeminiKey([{ kind: "schema_violation" }, { kind: "refused_code" }]);

    const response = await handler(post(URL, { description: DESCRIPTION }, user.jwt));

    assert.equal(response.status, 200);
    assert.equal((await geminiRequests(key)).length, 3);
    assert.equal(await traderCount(user), 1);
  }));

stackTest("generate-strategy: no answer from the validator is 503 and nothing is saved (fail closed)", () =>
  withUser(async (user) => {
    await useGeminiKey();
    const cases: [string, string][] = [
      ["http://127.0.0.1:9", env("SIGNAL_VALIDATOR_SECRET")], // nothing listens
      [env("SIGNAL_VALIDATOR_URL"), "not-the-validators-secret-but-long-enough"], // 401 from the validator
    ];
    const [url, secret] = [env("SIGNAL_VALIDATOR_URL"), env("SIGNAL_VALIDATOR_SECRET")];
    try {
      for (const [badUrl, badSecret] of cases) {
        Deno.env.set("SIGNAL_VALIDATOR_URL", badUrl);
        Deno.env.set("SIGNAL_VALIDATOR_SECRET", badSecret);
        const response = await handler(post(URL, { description: DESCRIPTION }, user.jwt));
        assert.equal(response.status, 503);
        const error = (await json(response)).error;
        assert.equal(error.code, "validator_unavailable");
        assert.doesNotMatch(error.message, /secret|127\.0\.0\.1/);
      }
    } finally {
      Deno.env.set("SIGNAL_VALIDATOR_URL", url);
      Deno.env.set("SIGNAL_VALIDATOR_SECRET", secret);
    }
    assert.equal(await traderCount(user), 0);
    assert.equal((await usageOf(user)).reserved, 0);
  }));
