// generate-strategy: turn a signed-in user's plain-language strategy into signal code and analysis
// instructions with Gemini, have the worker's own compiler check and dry-run the code (the signal
// validator), save it as a trader of theirs, and make sure they have a worker machine. Code the compiler
// refuses goes back to the model once with the compiler's message; refused again, it is a 422 and nothing
// is saved.
import catalogJson from "../_shared/signal_helpers.json" with { type: "json" };
import dialectJson from "../_shared/signal_dialect.json" with { type: "json" };
import { authenticate, requireRole } from "../_shared/auth.ts";
import { reserveTokens, settleTokens } from "../_shared/budget.ts";
import { reportModelOutcome } from "../_shared/service_health.ts";
import { supabaseEnv } from "../_shared/env.ts";
import { type Checked, estimateTokens, GeminiClient, geminiConfigFromEnv, ModelError } from "../_shared/gemini.ts";
import { HttpError, invalidBody, jsonResponse, postHandler, readJsonObject } from "../_shared/http.ts";
import { validateSignalCode, validatorConfigFromEnv, type ValidatorConfig, type Verdict } from "../_shared/signal_validator.ts";
import { serviceClient } from "../_shared/supabase.ts";
import { provisionMachine } from "./machine.ts";
import {
  buildPrompt,
  buildSystemInstruction,
  type GeneratedStrategy,
  GEMINI_STRATEGY_SCHEMA,
  type HelperCatalog,
  type SignalDialect,
  strategyValidator,
} from "./strategy.ts";

const MAX_BODY_BYTES = 16_384;
const MIN_DESCRIPTION_CHARS = 10;
const MAX_DESCRIPTION_CHARS = 4000;
const MAX_NAME_CHARS = 100;
const MAX_OUTPUT_TOKENS = 4096;
// Control characters other than tab and newlines have no place in a description or a name.
const CONTROL_CHARS = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;

const catalog = catalogJson as HelperCatalog;

/** Characters as a person (and JSON Schema's minLength) counts them: code points, not UTF-16 units. */
function characters(text: string): number {
  return [...text].length;
}
const dialect = dialectJson as SignalDialect;
const systemInstruction = buildSystemInstruction(catalog, dialect);
const validateStrategy = strategyValidator();

/** The model's answer checked by the schema, then by the worker's compiler and a dry run (the validator).
 * `refusal` holds the compiler's verdict on the latest answer, so a final failure can say why. */
function compiledStrategyCheck(validator: ValidatorConfig) {
  const state: { refusal: Extract<Verdict, { ok: false }> | null } = { refusal: null };
  const check = async (value: unknown): Promise<Checked<GeneratedStrategy>> => {
    state.refusal = null;
    const shape = validateStrategy(value);
    if (!shape.ok) return shape;
    const { signalCode, timeframes, symbols } = shape.value;
    const verdict = await validateSignalCode(validator, { signalCode, timeframes, symbols });
    if (verdict.ok) return shape;
    state.refusal = verdict;
    const where = verdict.stage === "compile" ? "The sandbox's compiler refused signalCode" : "signalCode failed when run on recorded candles";
    return { ok: false, kind: "compiler", errors: [`${where}: ${verdict.message}. Rewrite signalCode within the dialect above.`] };
  };
  return { check, state };
}

interface StrategyRequest {
  description: string;
  name: string | null;
  /** false: only show the strategy (the console asks before it saves the trader itself). */
  save: boolean;
}

function parseRequest(body: Record<string, unknown>): StrategyRequest {
  const unknown = Object.keys(body).filter((key) => !["description", "name", "save"].includes(key));
  if (unknown.length) {
    throw invalidBody(`unknown field(s): ${unknown.join(", ")}; expected description, optional name and save`);
  }
  const { description, name, save = true } = body;
  if (typeof save !== "boolean") throw invalidBody("save must be a boolean when given");
  if (typeof description !== "string") throw invalidBody("description is required and must be a string");
  const trimmed = description.trim();
  const length = characters(trimmed);
  if (length < MIN_DESCRIPTION_CHARS || length > MAX_DESCRIPTION_CHARS) {
    throw invalidBody(`description must be ${MIN_DESCRIPTION_CHARS}-${MAX_DESCRIPTION_CHARS} characters, was ${length}`);
  }
  if (CONTROL_CHARS.test(trimmed)) throw invalidBody("description must not contain control characters");
  if (name === undefined || name === null) return { description: trimmed, name: null, save };
  if (typeof name !== "string") throw invalidBody("name must be a string when given");
  const trimmedName = name.trim();
  if (characters(trimmedName) < 1 || characters(trimmedName) > MAX_NAME_CHARS) {
    throw invalidBody(`name must be 1-${MAX_NAME_CHARS} characters, was ${characters(trimmedName)}`);
  }
  if (CONTROL_CHARS.test(trimmedName) || /[\r\n]/.test(trimmedName)) {
    throw invalidBody("name must be one line without control characters");
  }
  return { description: trimmed, name: trimmedName, save };
}

export const handler = postHandler("generate-strategy", async (req) => {
  const env = supabaseEnv();
  const caller = await authenticate(req);
  const request = parseRequest(await readJsonObject(req, MAX_BODY_BYTES));
  requireRole(caller, ["authenticated"], "generate strategies");
  const userId = caller.userId as string;
  const gemini = new GeminiClient(geminiConfigFromEnv());
  const compiled = compiledStrategyCheck(validatorConfigFromEnv());
  const db = serviceClient(env);

  const { data: user, error: userError } = await db.from("users").select("id, tier").eq("id", userId).maybeSingle();
  if (userError) throw new Error(`reading users failed: ${userError.message}`);
  if (!user) throw new HttpError(404, "user_not_found", `user ${userId} has no account`);

  const prompt = buildPrompt(request.description, request.name);
  // Three rounds at most (the answer, one correction of its shape, one of its code), each resending the
  // conversation so far.
  const reserved = 3 * (estimateTokens(systemInstruction + prompt) + 2 * MAX_OUTPUT_TOKENS);
  const reservation = await reserveTokens(db, userId, reserved);
  let result;
  try {
    result = await gemini.generate({
      systemInstruction,
      prompt,
      responseSchema: GEMINI_STRATEGY_SCHEMA,
      validate: compiled.check,
      maxOutputTokens: MAX_OUTPUT_TOKENS,
      temperature: 0.3,
    });
  } catch (error) {
    if (error instanceof ModelError && compiled.state.refusal) {
      // The model answered, twice, with code the worker would refuse: not an outage of the model.
      await settleTokens(db, reservation, error.usage);
      const refusal = compiled.state.refusal;
      console.warn(`generate-strategy: signal code refused after a correction user_id=${userId} stage=${refusal.stage}: ${refusal.message}`);
      throw new HttpError(
        422,
        "signal_code_rejected",
        `the generated signal code was refused by the worker's compiler even after one correction: ${refusal.message}`,
      );
    }
    if (error instanceof ModelError) {
      await settleTokens(db, reservation, error.usage);
      await reportModelOutcome(db, error);
      console.error(`generate-strategy: model failed user_id=${userId} failure=${error.failure} attempts=${error.attempts}: ${error.message}`);
      throw new HttpError(502, error.failure, `the AI model failed to produce a strategy: ${error.message}`);
    }
    await settleTokens(db, reservation, { promptTokens: 0, completionTokens: 0 });
    throw error; // e.g. the validator could not answer (503): nothing is saved
  }
  await settleTokens(db, reservation, result.usage);
  await reportModelOutcome(db);

  const strategy = result.value;
  const usage = { promptTokens: result.usage.promptTokens, completionTokens: result.usage.completionTokens, model: result.model };
  const row = {
    name: request.name ?? strategy.name.trim(),
    description: request.description,
    signal_code: strategy.signalCode,
    ai_instructions: strategy.aiInstructions.trim(),
    timeframes: strategy.timeframes,
    check_interval: strategy.recommendedInterval,
    reanalysis_interval: strategy.reanalysisInterval,
    symbols: strategy.symbols,
  };
  if (!request.save) {
    // A preview: the caller saves the trader itself (as its user, through PostgREST) if the trader wants it.
    return jsonResponse({ success: true, saved: false, trader: { id: null, ...traderAnswer(row) }, usage });
  }
  const { data: trader, error: insertError } = await db
    .from("traders")
    .insert({ user_id: userId, ...row })
    .select("id, name, signal_code, ai_instructions, timeframes, check_interval, reanalysis_interval, symbols")
    .single();
  if (insertError) throw new Error(`inserting the trader failed: ${insertError.code} ${insertError.message}`);

  const machine = await provisionMachine(db, env, userId);
  return jsonResponse({
    success: true,
    saved: true,
    trader: { id: trader.id, ...traderAnswer(trader) },
    ...(machine.machineId ? { machineId: machine.machineId } : {}),
    machine,
    usage,
  });
});

interface TraderColumns {
  name: string;
  signal_code: string;
  ai_instructions: string;
  timeframes: string[];
  check_interval: string;
  reanalysis_interval: string;
  symbols: string[] | null;
}

function traderAnswer(trader: TraderColumns) {
  return {
    name: trader.name,
    signalCode: trader.signal_code,
    aiInstructions: trader.ai_instructions,
    timeframes: trader.timeframes,
    recommendedInterval: trader.check_interval,
    reanalysisInterval: trader.reanalysis_interval,
    symbols: trader.symbols,
  };
}
