// The signal-code validator (worker/validator, `python -m worker.validator`): the worker's own compiler and
// sandbox, which Edge Functions cannot run themselves. It compiles the code under the worker's policy and
// dry-runs it on recorded candles; we reach it with a shared secret and fail closed when it cannot answer.
import { positiveIntEnv, requireEnv } from "./env.ts";
import { HttpError } from "./http.ts";

export interface ValidatorConfig {
  /** e.g. https://trademind-validator.fly.dev (production), http://127.0.0.1:54345 (local stack). */
  url: string;
  secret: string;
  timeoutMs: number;
}

export function validatorConfigFromEnv(): ValidatorConfig {
  return {
    url: requireEnv("SIGNAL_VALIDATOR_URL").replace(/\/+$/, ""),
    secret: requireEnv("SIGNAL_VALIDATOR_SECRET"),
    timeoutMs: positiveIntEnv("SIGNAL_VALIDATOR_TIMEOUT_MS", 30_000),
  };
}

export interface SignalCodeRequest {
  signalCode: string;
  timeframes: string[];
  symbols: string[];
}

export type Verdict =
  | { ok: true; policyVersion: number }
  | { ok: false; message: string; line: number | null; stage: "compile" | "dry_run" };

/** The validator's verdict; throws HttpError 503 `validator_unavailable` when it gives none. */
export async function validateSignalCode(
  config: ValidatorConfig,
  request: SignalCodeRequest,
  fetchImpl: typeof fetch = fetch,
): Promise<Verdict> {
  let response: Response;
  try {
    response = await fetchImpl(`${config.url}/validate`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${config.secret}` },
      body: JSON.stringify(request),
      signal: AbortSignal.timeout(config.timeoutMs),
    });
  } catch (error) {
    throw unavailable(`unreachable (${(error as Error).name}: ${(error as Error).message})`);
  }
  const body = await response.json().catch(() => null) as Record<string, unknown> | null;
  if (response.status === 200 && body?.ok === true) return { ok: true, policyVersion: Number(body.policyVersion) };
  const error = body?.error as { code?: string; message?: string; line?: number | null; stage?: string } | undefined;
  if (response.status === 422 && error?.code === "signal_code_rejected" && typeof error.message === "string") {
    return {
      ok: false,
      message: error.message,
      line: typeof error.line === "number" ? error.line : null,
      stage: error.stage === "dry_run" ? "dry_run" : "compile",
    };
  }
  throw unavailable(`answered HTTP ${response.status}${error?.code ? ` ${error.code}` : ""}`);
}

function unavailable(detail: string): HttpError {
  console.error(`signal validator: ${detail}`);
  return new HttpError(503, "validator_unavailable", "the signal-code validator is unavailable; nothing was saved, try again shortly");
}
