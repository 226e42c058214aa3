// The backtest form of analyze-signal: a signal that is not a row. A backtest (trademind backtest, run as the
// signed-in user) replays a strategy in memory, so it sends the context a live call reads from the tables:
// the trader's name and instructions, the signal, its open position and its last analyses. Nothing is read
// from or written to the live tables; the model call counts against the user's daily AI budget as any other.
import { DECISIONS, type DecisionKind } from "../_shared/decision.ts";
import { invalidBody } from "../_shared/http.ts";
import type { PastAnalysis, PositionContext, SignalContext, TraderContext } from "./prompt.ts";

const SIGNAL_STATUSES = ["new", "watching", "position_open"];
const MAX_NAME_CHARS = 100; // traders_name_length
const MAX_INSTRUCTIONS_CHARS = 20_000; // traders_ai_instructions_length
const MAX_REASONING_CHARS = 4_000;
const MAX_HISTORY = 3; // what a live call reads (HISTORY_ENTRIES)
const MAX_TIME_CHARS = 40;
const MAX_MAGNITUDE = 1e18;
const FIELDS: Record<string, readonly string[]> = {
  backtest: ["trader", "signal", "position", "history"],
  "backtest.trader": ["name", "aiInstructions"],
  "backtest.signal": ["status", "triggerPrice", "createdAt"],
  "backtest.position": ["side", "entryPrice", "size", "stopLoss", "takeProfit", "openedAt"],
};

export interface AnalysisContext {
  trader: TraderContext;
  signal: SignalContext;
  position: PositionContext | null;
  history: PastAnalysis[];
}

function object(value: unknown, field: string, required: readonly string[]): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) throw invalidBody(`${field} must be an object`);
  const allowed = FIELDS[field.replace(/\[\d+\]$/, "")] ?? required;
  const unknown = Object.keys(value).filter((key) => !allowed.includes(key));
  if (unknown.length) throw invalidBody(`${field}: unknown field(s) ${unknown.join(", ")}; expected ${allowed.join(", ")}`);
  const missing = required.filter((key) => !(key in value));
  if (missing.length) throw invalidBody(`${field}: missing ${missing.join(", ")}`);
  return value as Record<string, unknown>;
}

/** A string of 1..max Unicode code points (the database counts characters, not UTF-16 units). */
function text(value: unknown, field: string, max: number): string {
  if (typeof value !== "string" || value.length === 0 || [...value].length > max) {
    throw invalidBody(`${field} must be a string of 1-${max} characters`);
  }
  return value;
}

function price(value: unknown, field: string): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value <= 0 || value > MAX_MAGNITUDE) {
    throw invalidBody(`${field} must be a number greater than 0 and at most ${MAX_MAGNITUDE.toExponential()}`);
  }
  return value;
}

function level(value: unknown, field: string): number | null {
  return value === null ? null : price(value, field);
}

function moment(value: unknown, field: string): string {
  if (typeof value !== "string" || value.length > MAX_TIME_CHARS || !/^\d{4}-\d{2}-\d{2}T/.test(value) || Number.isNaN(Date.parse(value))) {
    throw invalidBody(`${field} must be an ISO 8601 date-time (2025-01-02T03:04:05Z)`);
  }
  return value;
}

function oneOf<T extends string>(value: unknown, field: string, choices: readonly T[]): T {
  if (typeof value !== "string" || !choices.includes(value as T)) throw invalidBody(`${field} must be one of ${choices.join(", ")}`);
  return value as T;
}

function position(value: unknown): PositionContext | null {
  if (value === null || value === undefined) return null;
  const field = "backtest.position";
  const row = object(value, field, FIELDS[field]);
  return {
    side: oneOf(row.side, `${field}.side`, ["long", "short"] as const),
    entryPrice: price(row.entryPrice, `${field}.entryPrice`),
    size: price(row.size, `${field}.size`),
    stopLoss: level(row.stopLoss, `${field}.stopLoss`),
    takeProfit: level(row.takeProfit, `${field}.takeProfit`),
    openedAt: moment(row.openedAt, `${field}.openedAt`),
  };
}

function history(value: unknown): PastAnalysis[] {
  if (value === undefined) return [];
  if (!Array.isArray(value) || value.length > MAX_HISTORY) {
    throw invalidBody(`backtest.history must be an array of at most ${MAX_HISTORY} analyses, newest first`);
  }
  return value.map((item, index) => {
    const field = `backtest.history[${index}]`;
    const entry = object(item, field, ["timestamp", "decision", "confidence", "reasoning"]);
    const confidence = entry.confidence;
    if (confidence !== null && (typeof confidence !== "number" || !Number.isInteger(confidence) || confidence < 0 || confidence > 100)) {
      throw invalidBody(`${field}.confidence must be a whole number from 0 to 100, or null`);
    }
    return {
      timestamp: moment(entry.timestamp, `${field}.timestamp`),
      decision: oneOf<DecisionKind>(entry.decision, `${field}.decision`, DECISIONS),
      confidence,
      reasoning: text(entry.reasoning, `${field}.reasoning`, MAX_REASONING_CHARS),
    };
  });
}

/** The backtest context of a request (400 naming the field when it is not one). */
export function parseBacktest(value: unknown): AnalysisContext {
  const body = object(value, "backtest", ["trader", "signal"]);
  const trader = object(body.trader, "backtest.trader", FIELDS["backtest.trader"]);
  const signal = object(body.signal, "backtest.signal", FIELDS["backtest.signal"]);
  return {
    trader: {
      name: text(trader.name, "backtest.trader.name", MAX_NAME_CHARS),
      aiInstructions: text(trader.aiInstructions, "backtest.trader.aiInstructions", MAX_INSTRUCTIONS_CHARS),
    },
    signal: {
      status: oneOf(signal.status, "backtest.signal.status", SIGNAL_STATUSES),
      triggerPrice: price(signal.triggerPrice, "backtest.signal.triggerPrice"),
      createdAt: moment(signal.createdAt, "backtest.signal.createdAt"),
    },
    position: position(body.position),
    history: history(body.history),
  };
}
