// The analysis decision: one JSON Schema file (schemas/decision.schema.json) is Gemini's responseSchema,
// this validator and the worker's validator; the prompt's description of it is generated from it too.
import schema from "./schemas/decision.schema.json" with { type: "json" };
import { compileValidator, toGeminiSchema, type Validation } from "./json_schema.ts";

export const DECISION_SCHEMA: Record<string, unknown> = schema;

export type DecisionKind =
  | "no_trade" | "watch" | "open_long" | "open_short" | "close" | "partial_close" | "scale_in" | "scale_out"
  | "update_stop_loss" | "update_take_profit" | "flip_position";

export interface Decision {
  decision: DecisionKind;
  reasoning: string;
  confidence: number;
  metadata: {
    stopLoss?: number;
    takeProfit?: number;
    positionSize?: number;
    closePercentage?: number;
    scaleInAmount?: number;
    scaleOutPercentage?: number;
    newStopLoss?: number;
    newTakeProfit?: number;
  };
}

interface DecisionRule {
  decision: DecisionKind;
  description: string;
  requiredMetadata: string[];
}

type JsonObject = Record<string, unknown>;
const properties = schema.properties as unknown as Record<string, JsonObject>;
const metadataProperties = (properties.metadata.properties ?? {}) as Record<string, JsonObject>;

export const DECISIONS: readonly DecisionKind[] = properties.decision.enum as DecisionKind[];

/** One rule per decision, read from the schema's allOf if/then entries. */
export const DECISION_RULES: readonly DecisionRule[] = (schema.allOf as unknown as JsonObject[]).map((rule) => {
  const condition = (rule.if as JsonObject).properties as Record<string, JsonObject>;
  const then = (rule.then as JsonObject).properties as Record<string, JsonObject>;
  return {
    decision: condition.decision.const as DecisionKind,
    description: String(rule.description),
    requiredMetadata: (then.metadata.required ?? []) as string[],
  };
});

/** Decisions that act on an open position, and those that only make sense without one. */
export const POSITION_DECISIONS: ReadonlySet<DecisionKind> = new Set([
  "watch", "close", "partial_close", "scale_in", "scale_out", "update_stop_loss", "update_take_profit",
  "flip_position",
]);
export const ENTRY_DECISIONS: ReadonlySet<DecisionKind> = new Set(["no_trade", "watch", "open_long", "open_short"]);

export const GEMINI_DECISION_SCHEMA = toGeminiSchema(DECISION_SCHEMA);
export const validateDecision = compileValidator<Decision>(DECISION_SCHEMA);

function bounds(property: JsonObject): string {
  const low = property.exclusiveMinimum !== undefined
    ? `> ${property.exclusiveMinimum}`
    : property.minimum !== undefined
    ? `>= ${property.minimum}`
    : "";
  const high = property.exclusiveMaximum !== undefined
    ? `< ${property.exclusiveMaximum}`
    : property.maximum !== undefined
    ? `<= ${property.maximum}`
    : "";
  return [low, high].filter(Boolean).join(" and ");
}

function describeField(name: string, property: JsonObject): string {
  const range = bounds(property);
  const length = property.maxLength !== undefined ? `, ${property.minLength ?? 0}-${property.maxLength} characters` : "";
  return `- ${name} (${property.type}${range ? `, ${range}` : ""}${length}): ${property.description}`;
}

/** The answer format, in words, generated from the schema; `allowed` narrows the decisions listed. */
export function describeDecisionFormat(allowed: ReadonlySet<DecisionKind> = new Set(DECISIONS)): string {
  const top = (schema.required as string[]).map((name) => describeField(name, properties[name]));
  const metadata = Object.entries(metadataProperties).map(([name, property]) => `  ${describeField(name, property)}`);
  const rules = DECISION_RULES.filter((rule) => allowed.has(rule.decision)).map((rule) => {
    const required = rule.requiredMetadata.length ? rule.requiredMetadata.join(", ") : "none";
    return `- ${rule.description} Required metadata: ${required}.`;
  });
  return [
    "Answer with exactly one JSON object with these fields:",
    ...top,
    "Metadata keys (include the ones the decision requires; omit keys that do not apply; no other keys):",
    ...metadata,
    `The decision must be one of: ${[...allowed].join(", ")}.`,
    ...rules,
  ].join("\n");
}

export interface DecisionContext {
  lastPrice: number;
  /** The signal's open position, if any. */
  position: { side: "long" | "short"; entryPrice: number; stopLoss: number | null; takeProfit: number | null } | null;
}

/**
 * Rules the schema cannot express, checked against the live context: which decisions fit (entry vs open
 * position) and that price levels sit on the right side of the current price.
 */
export function checkDecisionInContext(decision: Decision, context: DecisionContext): Validation<Decision> {
  const errors: string[] = [];
  const allowed = context.position ? POSITION_DECISIONS : ENTRY_DECISIONS;
  if (!allowed.has(decision.decision)) {
    errors.push(
      context.position
        ? `decision '${decision.decision}' does not apply: a ${context.position.side} position is open; choose one of ${[...allowed].join(", ")}`
        : `decision '${decision.decision}' needs an open position and there is none; choose one of ${[...allowed].join(", ")}`,
    );
  }
  const price = context.lastPrice;
  const m = decision.metadata;
  const opening = decision.decision === "open_long" ? "long"
    : decision.decision === "open_short" ? "short"
    : decision.decision === "flip_position" && context.position
    ? (context.position.side === "long" ? "short" : "long")
    : null;
  if (opening === "long" && m.stopLoss !== undefined && m.takeProfit !== undefined) {
    if (!(m.stopLoss < price && price < m.takeProfit)) {
      errors.push(`a long needs stopLoss < current price ${price} < takeProfit; was ${m.stopLoss} / ${m.takeProfit}`);
    }
  }
  if (opening === "short" && m.stopLoss !== undefined && m.takeProfit !== undefined) {
    if (!(m.takeProfit < price && price < m.stopLoss)) {
      errors.push(`a short needs takeProfit < current price ${price} < stopLoss; was ${m.takeProfit} / ${m.stopLoss}`);
    }
  }
  const side = context.position?.side;
  if (decision.decision === "update_stop_loss" && side && m.newStopLoss !== undefined) {
    if (side === "long" ? m.newStopLoss >= price : m.newStopLoss <= price) {
      errors.push(`the new stop of a ${side} must be ${side === "long" ? "below" : "above"} the current price ${price}; was ${m.newStopLoss}`);
    }
  }
  if (decision.decision === "update_take_profit" && side && m.newTakeProfit !== undefined) {
    if (side === "long" ? m.newTakeProfit <= price : m.newTakeProfit >= price) {
      errors.push(`the new target of a ${side} must be ${side === "long" ? "above" : "below"} the current price ${price}; was ${m.newTakeProfit}`);
    }
  }
  return errors.length ? { ok: false, errors } : { ok: true, value: decision };
}
