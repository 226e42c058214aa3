// The decision schema file: one rule per decision, required metadata enforced, Gemini's form free of
// keywords Gemini rejects, the prompt generated from it, and the context checks the schema cannot make.
import assert from "node:assert/strict";
import {
  checkDecisionInContext,
  type Decision,
  DECISION_RULES,
  DECISION_SCHEMA,
  DECISIONS,
  describeDecisionFormat,
  GEMINI_DECISION_SCHEMA,
  validateDecision,
} from "../_shared/decision.ts";

const SAMPLE_METADATA: Record<string, number> = {
  stopLoss: 41000, takeProfit: 44000, positionSize: 0.5, closePercentage: 0.5, scaleInAmount: 0.25,
  scaleOutPercentage: 0.3, newStopLoss: 42000, newTakeProfit: 45000,
};

function decision(kind: string, metadata: Record<string, number>): unknown {
  return { decision: kind, reasoning: "RSI 28 in an uptrend.", confidence: 70, metadata };
}

Deno.test("decision schema: the enum has the 11 decisions and each has exactly one rule", () => {
  assert.deepEqual([...DECISIONS].sort(), [
    "close", "flip_position", "no_trade", "open_long", "open_short", "partial_close", "scale_in", "scale_out",
    "update_stop_loss", "update_take_profit", "watch",
  ]);
  assert.deepEqual(DECISION_RULES.map((rule) => rule.decision).sort(), [...DECISIONS].sort());
});

Deno.test("decision schema: each decision passes with its required metadata and fails without each key", () => {
  for (const rule of DECISION_RULES) {
    const full = Object.fromEntries(rule.requiredMetadata.map((key) => [key, SAMPLE_METADATA[key]]));
    assert.equal(validateDecision(decision(rule.decision, full)).ok, true, rule.decision);
    for (const key of rule.requiredMetadata) {
      const { [key]: _, ...missing } = full;
      const result = validateDecision(decision(rule.decision, missing));
      assert.equal(result.ok, false, `${rule.decision} without ${key}`);
      if (!result.ok) assert.ok(result.errors.includes(`metadata must have required property '${key}'`), result.errors.join());
    }
  }
});

Deno.test("decision schema: required metadata matches the contract", () => {
  const required = Object.fromEntries(DECISION_RULES.map((rule) => [rule.decision, rule.requiredMetadata]));
  assert.deepEqual(required.open_long, ["stopLoss", "takeProfit"]);
  assert.deepEqual(required.open_short, ["stopLoss", "takeProfit"]);
  assert.deepEqual(required.partial_close, ["closePercentage"]);
  assert.deepEqual(required.update_stop_loss, ["newStopLoss"]);
  assert.deepEqual(required.update_take_profit, ["newTakeProfit"]);
});

Deno.test("decision schema: bounds, unknown keys and types are enforced", () => {
  const cases: [unknown, string][] = [
    [decision("partial_close", { closePercentage: 1 }), "metadata.closePercentage must be < 1"],
    [decision("partial_close", { closePercentage: 0 }), "metadata.closePercentage must be > 0"],
    [decision("open_long", { stopLoss: -1, takeProfit: 2 }), "metadata.stopLoss must be > 0"],
    [decision("watch", { new_stop_loss: 1 }), "metadata must NOT have additional properties 'new_stop_loss'"],
    [{ ...decision("watch", {}) as object, confidence: 101 }, "confidence must be <= 100"],
    [{ ...decision("watch", {}) as object, confidence: 50.5 }, "confidence must be integer"],
    [{ ...decision("watch", {}) as object, reasoning: "" }, "reasoning must NOT have fewer than 1 characters"],
    [{ decision: "hold", reasoning: "x", confidence: 1, metadata: {} }, "decision must be equal to one of the allowed values"],
    [{ decision: "watch", reasoning: "x", confidence: 1 }, "(root) must have required property 'metadata'"],
  ];
  for (const [value, expected] of cases) {
    const result = validateDecision(value);
    assert.equal(result.ok, false, expected);
    if (!result.ok) assert.ok(result.errors.some((error) => error.startsWith(expected)), `${expected} in ${result.errors}`);
  }
});

Deno.test("decision schema: Gemini's form keeps types, enums and required fields and drops what Gemini rejects", () => {
  const text = JSON.stringify(GEMINI_DECISION_SCHEMA);
  for (const keyword of ["$schema", "$id", "additionalProperties", "allOf", "if", "then", "const", "exclusiveMinimum"]) {
    assert.ok(!text.includes(`"${keyword}"`), keyword);
  }
  const properties = GEMINI_DECISION_SCHEMA.properties as Record<string, Record<string, unknown>>;
  assert.equal(GEMINI_DECISION_SCHEMA.type, "OBJECT");
  assert.deepEqual(properties.decision.enum, DECISIONS);
  assert.deepEqual(GEMINI_DECISION_SCHEMA.required, DECISION_SCHEMA.required);
  assert.equal(properties.confidence.type, "INTEGER");
});

Deno.test("decision prompt: names every decision with its required metadata and every metadata key", () => {
  const text = describeDecisionFormat();
  for (const rule of DECISION_RULES) {
    const required = rule.requiredMetadata.length ? rule.requiredMetadata.join(", ") : "none";
    assert.ok(text.includes(`- ${rule.decision}:`), rule.decision);
    assert.ok(text.includes(`Required metadata: ${required}.`), rule.decision);
  }
  const metadata = (DECISION_SCHEMA.properties as Record<string, { properties: object }>).metadata.properties;
  for (const key of Object.keys(metadata)) assert.ok(text.includes(`- ${key} (number`), key);
  assert.ok(text.includes("closePercentage (number, > 0 and < 1)"));
});

Deno.test("decision prompt: narrowed to the allowed decisions", () => {
  const text = describeDecisionFormat(new Set(["no_trade", "watch"]));
  assert.ok(text.includes("The decision must be one of: no_trade, watch."));
  assert.ok(!text.includes("- open_long:"));
});

Deno.test("decision context: entries need no position and stops on the right side of the price", () => {
  const flat = { lastPrice: 42500, position: null };
  const long = (metadata: Decision["metadata"]) => ({ ...decision("open_long", {}) as Decision, metadata });

  assert.equal(checkDecisionInContext(long({ stopLoss: 41000, takeProfit: 44000 }), flat).ok, true);
  const inverted = checkDecisionInContext(long({ stopLoss: 44000, takeProfit: 41000 }), flat);
  assert.equal(inverted.ok, false);
  const closing = checkDecisionInContext({ ...decision("close", {}) as Decision }, flat);
  assert.ok(!closing.ok && closing.errors[0].includes("needs an open position and there is none"));
});

Deno.test("decision context: a position allows only position decisions, with levels checked per side", () => {
  const short = {
    lastPrice: 42500,
    position: { side: "short" as const, entryPrice: 43000, stopLoss: 44000, takeProfit: 40000 },
  };
  const stop = (newStopLoss: number) => ({ ...decision("update_stop_loss", {}) as Decision, metadata: { newStopLoss } });

  assert.equal(checkDecisionInContext(stop(43000), short).ok, true);
  assert.equal(checkDecisionInContext(stop(42000), short).ok, false);
  const opening = checkDecisionInContext({ ...decision("open_long", {}) as Decision, metadata: { stopLoss: 1, takeProfit: 50000 } }, short);
  assert.ok(!opening.ok && opening.errors[0].includes("a short position is open"));
  const flip = { ...decision("flip_position", {}) as Decision, metadata: { stopLoss: 41000, takeProfit: 45000 } };
  assert.equal(checkDecisionInContext(flip, short).ok, true, "flipping a short opens a long");
});
