// Gemini REST client: generateContent with a responseSchema, per-attempt timeouts, retries with backoff
// and full jitter on 429/5xx/timeouts/network errors, and one corrective re-ask per kind of validation
// failure. Token usage is summed over every attempt (failed ones cost tokens too).
import { optionalEnv, positiveIntEnv, requireEnv } from "./env.ts";
import type { Validation } from "./json_schema.ts";

export const DEFAULT_GEMINI_MODEL = "gemini-3.5-flash";
export const DEFAULT_GEMINI_BASE_URL = "https://generativelanguage.googleapis.com";

export interface GeminiConfig {
  apiKey: string;
  baseUrl: string;
  model: string;
  /** Per attempt. */
  timeoutMs: number;
  /** All attempts together, sleeps included; keeps us under the gateway's read timeout. */
  deadlineMs: number;
  maxAttempts: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
}

export function geminiConfigFromEnv(): GeminiConfig {
  return {
    apiKey: requireEnv("GEMINI_API_KEY"),
    baseUrl: optionalEnv("GEMINI_BASE_URL", DEFAULT_GEMINI_BASE_URL).replace(/\/+$/, ""),
    model: optionalEnv("GEMINI_MODEL", DEFAULT_GEMINI_MODEL),
    timeoutMs: positiveIntEnv("GEMINI_TIMEOUT_MS", 30_000),
    deadlineMs: positiveIntEnv("GEMINI_DEADLINE_MS", 90_000),
    maxAttempts: positiveIntEnv("GEMINI_MAX_ATTEMPTS", 4),
    backoffBaseMs: positiveIntEnv("GEMINI_BACKOFF_BASE_MS", 500),
    backoffMaxMs: positiveIntEnv("GEMINI_BACKOFF_MAX_MS", 8_000),
  };
}

export interface Usage {
  promptTokens: number;
  completionTokens: number;
}

export interface GenerateRequest<T> {
  systemInstruction: string;
  prompt: string;
  /** Gemini's OpenAPI-subset form (see toGeminiSchema). */
  responseSchema: Record<string, unknown>;
  /** Schema and semantic checks (may be async); errors are fed back to the model once per kind. */
  validate: (value: unknown) => Checked<T> | Promise<Checked<T>>;
  maxOutputTokens: number;
  temperature?: number;
}

/** A validation result; a failure may name its kind (default "output"): each kind gets one correction. */
export type Checked<T> = Validation<T> | { ok: false; errors: string[]; kind: string };

export interface GenerateResult<T> {
  value: T;
  usage: Usage;
  attempts: number;
  model: string;
}

export type ModelFailure =
  | "model_unavailable" // 429/5xx/timeouts until attempts or the deadline ran out
  | "model_refused_request" // 4xx other than 429: our request or key is wrong; retrying will not help
  | "model_blocked" // the prompt or answer was blocked by safety filters
  | "model_invalid_output"; // still invalid after the corrective re-ask

export class ModelError extends Error {
  constructor(readonly failure: ModelFailure, message: string, readonly usage: Usage, readonly attempts: number) {
    super(message);
    this.name = "ModelError";
  }
}

export interface GeminiDeps {
  fetch: typeof fetch;
  sleep: (ms: number) => Promise<void>;
  random: () => number;
  now: () => number;
}

const defaultDeps: GeminiDeps = {
  fetch: (input, init) => fetch(input, init),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  random: Math.random,
  now: () => performance.now(),
};

class Transient extends Error {
  constructor(message: string, readonly retryAfterMs: number | null = null) {
    super(message);
  }
}

interface Content {
  role: "user" | "model";
  parts: { text: string }[];
}

const RETRYABLE_STATUS = new Set([429, 500, 502, 503, 504]);

/** Gemini's RetryInfo detail ("retryDelay": "12s" or "1.5s"), in ms. */
function retryDelayMs(body: unknown): number | null {
  const details = (body as { error?: { details?: { "@type"?: string; retryDelay?: string }[] } })?.error?.details;
  const info = details?.find((detail) => detail["@type"]?.endsWith("google.rpc.RetryInfo"));
  const match = info?.retryDelay?.match(/^(\d+(?:\.\d+)?)s$/);
  return match ? Math.round(Number(match[1]) * 1000) : null;
}

function errorText(body: unknown, status: number): string {
  const error = (body as { error?: { status?: string; message?: string } })?.error;
  return `HTTP ${status}${error?.status ? ` ${error.status}` : ""}${error?.message ? `: ${error.message.slice(0, 300)}` : ""}`;
}

export class GeminiClient {
  private readonly deps: GeminiDeps;

  constructor(readonly config: GeminiConfig, deps: Partial<GeminiDeps> = {}) {
    this.deps = { ...defaultDeps, ...deps };
  }

  async generate<T>(request: GenerateRequest<T>): Promise<GenerateResult<T>> {
    const { config, deps } = this;
    const started = deps.now();
    const usage: Usage = { promptTokens: 0, completionTokens: 0 };
    const contents: Content[] = [{ role: "user", parts: [{ text: request.prompt }] }];
    const corrected = new Set<string>();
    let lastProblem = "no attempt was made";
    let transientFailures = 0;
    let attemptsMade = 0;
    for (let attempt = 1; attempt <= config.maxAttempts; attempt++) {
      const remainingMs = config.deadlineMs - (deps.now() - started);
      if (remainingMs <= 0) break;
      attemptsMade = attempt;
      let text: string;
      try {
        text = await this.attempt(request, contents, usage, Math.min(config.timeoutMs, remainingMs));
      } catch (error) {
        if (!(error instanceof Transient)) throw this.finalError(error, usage, attempt);
        lastProblem = error.message;
        transientFailures++;
        const ceilingMs = Math.min(config.backoffMaxMs, config.backoffBaseMs * 2 ** (transientFailures - 1));
        const delayMs = Math.max(deps.random() * ceilingMs, error.retryAfterMs ?? 0);
        if (attempt === config.maxAttempts || deps.now() - started + delayMs >= config.deadlineMs) break;
        console.warn(`gemini: retrying attempt=${attempt} delay_ms=${Math.round(delayMs)} problem=${lastProblem}`);
        await deps.sleep(delayMs);
        continue;
      }
      const problems = await this.check(text, request);
      if (problems.ok) return { value: problems.value, usage, attempts: attempt, model: config.model };
      lastProblem = `invalid output: ${problems.errors.join("; ")}`;
      const kind = "kind" in problems ? problems.kind : "output";
      if (corrected.has(kind)) {
        throw new ModelError("model_invalid_output", `the model's answer was still invalid after a correction: ${problems.errors.join("; ")}`, usage, attempt);
      }
      corrected.add(kind);
      contents.push({ role: "model", parts: [{ text }] });
      contents.push({
        role: "user",
        parts: [{
          text: `Your answer was rejected:\n- ${problems.errors.join("\n- ")}\n` +
            "Answer again with one JSON object that fixes every problem above and follows all earlier instructions.",
        }],
      });
    }
    const failure = lastProblem.startsWith("invalid output") ? "model_invalid_output" : "model_unavailable";
    throw new ModelError(failure, `the model did not answer usably: ${lastProblem}`, usage, attemptsMade);
  }

  private check<T>(text: string, request: GenerateRequest<T>): Checked<T> | Promise<Checked<T>> {
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (error) {
      return { ok: false, errors: [`the answer is not valid JSON (${(error as Error).message})`] };
    }
    return request.validate(value);
  }

  private finalError(error: unknown, usage: Usage, attempt: number): ModelError {
    if (error instanceof ModelError) return new ModelError(error.failure, error.message, usage, attempt);
    return new ModelError("model_unavailable", (error as Error).message, usage, attempt);
  }

  /** One HTTP call; returns the answer's text, throws Transient (retry) or ModelError (stop). */
  private async attempt<T>(request: GenerateRequest<T>, contents: Content[], usage: Usage, timeoutMs: number): Promise<string> {
    const { config } = this;
    const url = `${config.baseUrl}/v1beta/models/${encodeURIComponent(config.model)}:generateContent`;
    const body = {
      systemInstruction: { parts: [{ text: request.systemInstruction }] },
      contents,
      generationConfig: {
        responseMimeType: "application/json",
        responseSchema: request.responseSchema,
        maxOutputTokens: request.maxOutputTokens,
        temperature: request.temperature ?? 0.2,
        candidateCount: 1,
      },
    };
    let response: Response;
    try {
      response = await this.deps.fetch(url, {
        method: "POST",
        headers: { "content-type": "application/json", "x-goog-api-key": config.apiKey },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (error) {
      const name = (error as Error).name;
      if (name === "TimeoutError" || name === "AbortError") throw new Transient(`timed out after ${timeoutMs} ms`);
      throw new Transient(`network error: ${(error as Error).message}`);
    }
    let payload: unknown;
    try {
      payload = await response.json();
    } catch (error) {
      const name = (error as Error).name;
      if (name === "TimeoutError" || name === "AbortError") throw new Transient(`timed out after ${timeoutMs} ms`);
      if (RETRYABLE_STATUS.has(response.status)) throw new Transient(`HTTP ${response.status} with a non-JSON body`);
      throw new ModelError("model_refused_request", `HTTP ${response.status} with a non-JSON body`, usage, 0);
    }
    if (!response.ok) {
      if (RETRYABLE_STATUS.has(response.status)) throw new Transient(errorText(payload, response.status), retryDelayMs(payload));
      throw new ModelError("model_refused_request", errorText(payload, response.status), usage, 0);
    }
    const answer = payload as {
      candidates?: { content?: { parts?: { text?: string; thought?: boolean }[] }; finishReason?: string }[];
      promptFeedback?: { blockReason?: string };
      usageMetadata?: { promptTokenCount?: number; candidatesTokenCount?: number; thoughtsTokenCount?: number };
    };
    usage.promptTokens += answer.usageMetadata?.promptTokenCount ?? 0;
    // Thinking tokens are billed as output.
    usage.completionTokens += (answer.usageMetadata?.candidatesTokenCount ?? 0) +
      (answer.usageMetadata?.thoughtsTokenCount ?? 0);
    if (answer.promptFeedback?.blockReason) {
      throw new ModelError("model_blocked", `the prompt was blocked (${answer.promptFeedback.blockReason})`, usage, 0);
    }
    const candidate = answer.candidates?.[0];
    if (!candidate) throw new Transient("the response had no candidate");
    if (["SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION"].includes(candidate.finishReason ?? "")) {
      throw new ModelError("model_blocked", `the answer was blocked (${candidate.finishReason})`, usage, 0);
    }
    return (candidate.content?.parts ?? []).filter((part) => !part.thought).map((part) => part.text ?? "").join("");
  }
}

/** A rough upper bound of the tokens a prompt costs (Gemini averages about 4 characters per token). */
export function estimateTokens(text: string): number {
  return Math.ceil(text.length / 3);
}
