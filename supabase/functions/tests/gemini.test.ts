// The Gemini client against the devstack stand-in: answers, retries on 429/5xx/timeouts, the corrective
// re-ask on invalid output, and no retry when the API refuses the request.
import assert from "node:assert/strict";
import { GEMINI_DECISION_SCHEMA, validateDecision } from "../_shared/decision.ts";
import { GeminiClient, geminiConfigFromEnv, ModelError } from "../_shared/gemini.ts";
import { geminiRequests, stackTest, useGeminiKey } from "./helpers.ts";

const PROMPT = [
  "## Situation",
  "Allowed decisions now: no_trade, watch, open_long, open_short",
  "## Ticker (JSON)",
  JSON.stringify({ lastPrice: 42500 }),
  "## Indicators (JSON)",
  JSON.stringify({ rsi_1h: 25, macd_1h: { macd: 1, signal: 0.5, histogram: 0.5 } }),
].join("\n");

function client(sleeps: number[] = [], overrides: Record<string, number> = {}): GeminiClient {
  const config = { ...geminiConfigFromEnv(), ...overrides };
  return new GeminiClient(config, { sleep: (ms) => (sleeps.push(ms), Promise.resolve()) });
}

function decide(gemini: GeminiClient) {
  return gemini.generate({
    systemInstruction: "Decide.",
    prompt: PROMPT,
    responseSchema: GEMINI_DECISION_SCHEMA,
    validate: validateDecision,
    maxOutputTokens: 512,
  });
}

stackTest("gemini: a valid answer is parsed, validated and its usage counted", async () => {
  const key = await useGeminiKey();

  const result = await decide(client());

  assert.equal(result.value.decision, "open_long");
  assert.ok(result.value.metadata.stopLoss! < 42500 && result.value.metadata.takeProfit! > 42500);
  assert.equal(result.attempts, 1);
  assert.ok(result.usage.promptTokens > 0 && result.usage.completionTokens > 0);
  const [sent] = await geminiRequests(key);
  assert.equal(sent.generationConfig.responseMimeType, "application/json");
  assert.deepEqual(sent.generationConfig.responseSchema, GEMINI_DECISION_SCHEMA);
});

stackTest("gemini: 429 and 5xx answers are retried with backoff until one succeeds", async () => {
  const key = await useGeminiKey([{ kind: "rate_limit" }, { kind: "server_error" }, { kind: "unavailable" }]);
  const sleeps: number[] = [];

  const result = await decide(client(sleeps));

  assert.equal(result.attempts, 4);
  assert.equal(sleeps.length, 3);
  assert.equal((await geminiRequests(key)).length, 4);
});

stackTest("gemini: the server's RetryInfo delay is respected", async () => {
  await useGeminiKey([{ kind: "rate_limit", retryDelaySecs: 1.5 }]);
  const sleeps: number[] = [];

  await decide(client(sleeps));

  assert.deepEqual(sleeps, [1500]);
});

stackTest("gemini: a timed-out attempt is abandoned and retried", async () => {
  const key = await useGeminiKey([{ kind: "timeout", delaySecs: 3 }]);
  const started = performance.now();

  const result = await decide(client([], { timeoutMs: 300 }));

  assert.equal(result.attempts, 2);
  assert.ok(performance.now() - started < 2500, "the slow attempt was not waited for");
  assert.equal((await geminiRequests(key)).length, 2);
});

stackTest("gemini: malformed JSON is fed back once and the corrected answer accepted", async () => {
  const key = await useGeminiKey([{ kind: "malformed_json" }]);

  const result = await decide(client());

  assert.equal(result.value.decision, "open_long");
  const requests = await geminiRequests(key);
  assert.equal(requests.length, 2);
  const retry = requests[1].contents;
  assert.deepEqual(retry.map((turn: { role: string }) => turn.role), ["user", "model", "user"]);
  assert.match(retry[2].parts[0].text, /Your answer was rejected:\n- the answer is not valid JSON/);
});

stackTest("gemini: output that violates the schema twice fails as model_invalid_output", async () => {
  const key = await useGeminiKey([{ kind: "schema_violation" }, { kind: "schema_violation" }]);

  const error = await decide(client()).catch((e) => e);

  assert.ok(error instanceof ModelError);
  assert.equal(error.failure, "model_invalid_output");
  assert.ok(error.usage.promptTokens > 0, "tokens spent on failed attempts are still counted");
  const requests = await geminiRequests(key);
  assert.equal(requests.length, 2);
  const feedback = requests[1].contents[2].parts[0].text;
  assert.match(feedback, /metadata must have required property 'stopLoss'/);
  assert.match(feedback, /confidence must be <= 100/);
});

stackTest("gemini: persistent 5xx ends as model_unavailable after maxAttempts", async () => {
  const key = await useGeminiKey(Array(5).fill({ kind: "server_error" }));

  const error = await decide(client([], { maxAttempts: 3 })).catch((e) => e);

  assert.ok(error instanceof ModelError);
  assert.equal(error.failure, "model_unavailable");
  assert.match(error.message, /HTTP 500 INTERNAL/);
  assert.equal((await geminiRequests(key)).length, 3);
});

stackTest("gemini: a refused request (bad API key) is not retried", async () => {
  const key = await useGeminiKey([{ kind: "invalid_key" }]);

  const error = await decide(client()).catch((e) => e);

  assert.ok(error instanceof ModelError);
  assert.equal(error.failure, "model_refused_request");
  assert.match(error.message, /API key not valid/);
  assert.equal((await geminiRequests(key)).length, 1);
});

stackTest("gemini: the deadline bounds retries even when attempts remain", async () => {
  await useGeminiKey(Array(5).fill({ kind: "rate_limit", retryDelaySecs: 60 }));

  const error = await decide(client([], { deadlineMs: 1000 })).catch((e) => e);

  assert.ok(error instanceof ModelError);
  assert.equal(error.failure, "model_unavailable");
  assert.equal(error.attempts, 1);
});
