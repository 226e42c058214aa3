// Shared test fixtures: the local stack's settings, JWT minting, rows written straight to Postgres (as the
// platform would), and per-test Gemini stand-in API keys with their own fault queues.
import { importJWK, SignJWT } from "npm:jose@6.2.19";
import postgres from "npm:postgres@3.4.7";

// The local project's signing key (devstack/auth/signing_keys.py writes it when the stack starts).
const STATE_DIR = Deno.env.get("TRADEMIND_DEVSTACK_DIR") ?? new URL("../../../.devstack", import.meta.url).pathname;
const SIGNING_KEY: Record<string, unknown> = JSON.parse(Deno.readTextFileSync(`${STATE_DIR}/auth/signing_keys.json`))[0];

const DEFAULTS: Record<string, string> = {
  SUPABASE_URL: "http://127.0.0.1:54321",
  SUPABASE_DB_URL: "postgresql://postgres:postgres@127.0.0.1:54322/postgres",
  SUPABASE_SERVICE_ROLE_KEY: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." +
    "eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImV4cCI6MTk4MzgxMjk5Nn0." +
    "EGIM96RAZx35lJzdJsyH-qQwv8Hdp7fsn3W0YpN81IU",
  SUPABASE_ANON_KEY: "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." +
    "eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4MTI5OTZ9." +
    "CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0",
  // The lifecycle functions' settings, as devstack/config.py's fly_env() gives them to the functions.
  FLY_API_URL: "http://127.0.0.1:54342/v1",
  FLY_API_TOKEN: "fly-devstack-token-not-a-secret",
  FLY_APP_NAME: "trademind-workers",
  FLY_WORKER_IMAGE: "registry.fly.io/trademind-workers:dev",
  MACHINE_BASE_URL: "http://127.0.0.1:54350",
  MACHINE_SECRET_KEY: "devstack-machine-secret-key-not-for-production",
  // The signal-code validator (worker/validator), as devstack/config.py's functions_env() gives it.
  SIGNAL_VALIDATOR_URL: "http://127.0.0.1:54345",
  SIGNAL_VALIDATOR_SECRET: "devstack-validator-secret-not-for-production",
  MACHINE_SIGNING_KEY: JSON.stringify(SIGNING_KEY),
  GEMINI_BASE_URL: "http://127.0.0.1:54341",
  // The notify function's targets, as devstack/config.py gives them (operator alerts go to a stand-in bot).
  TELEGRAM_API_URL: "http://127.0.0.1:54343",
  OPERATOR_TELEGRAM_BOT_TOKEN: "100000001:devstack-operator-bot-token-not-a-secret",
  OPERATOR_TELEGRAM_CHAT_ID: "-1000000000001",
  GEMINI_API_KEY: "devstack-gemini-key",
  // Fast retries so fault tests take milliseconds, not seconds.
  GEMINI_BACKOFF_BASE_MS: "5",
  GEMINI_BACKOFF_MAX_MS: "20",
  GEMINI_TIMEOUT_MS: "2000",
};
for (const [name, value] of Object.entries(DEFAULTS)) if (!Deno.env.get(name)) Deno.env.set(name, value);

export const env = (name: string): string => Deno.env.get(name) as string;
export const GEMINI_URL = env("GEMINI_BASE_URL");

export const sql = postgres(env("SUPABASE_DB_URL"), { max: 2, idle_timeout: 1, onnotice: () => {} });

/** Deno.test for tests that use the pooled database and HTTP clients (their sockets outlive one test). */
export function stackTest(name: string, fn: () => Promise<void>): void {
  Deno.test({ name, fn, sanitizeOps: false, sanitizeResources: false });
}

/** The local stack's legacy JWT secret (PostgREST still trusts it; functions only with LEGACY_JWT_SECRET). */
export const LEGACY_JWT_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long";

function base64Url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * A token as the project issues them: ES256 with the stack's signing key (or `key`, a private JWK), or HS256
 * with `secret`. trader_machine tokens carry generation 1 unless `machine_gen` is given.
 */
export async function mintJwt(
  claims: Record<string, unknown>,
  { alg = "ES256", secret = LEGACY_JWT_SECRET, key = SIGNING_KEY, validForSecs = 3600 }: {
    alg?: string;
    secret?: string;
    key?: Record<string, unknown>;
    validForSecs?: number;
  } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const body = {
    iss: "supabase-demo",
    iat: now,
    exp: now + validForSecs,
    ...(claims.role === "trader_machine" ? { machine_gen: 1 } : {}),
    ...claims,
  };
  if (alg === "ES256") {
    const { kty, crv, x, y, d } = key;
    const signingKey = await importJWK({ kty, crv, x, y, d } as Record<string, string>, "ES256");
    return await new SignJWT(body).setProtectedHeader({ alg: "ES256", kid: String(key.kid), typ: "JWT" }).sign(signingKey);
  }
  const encoder = new TextEncoder();
  const header = base64Url(encoder.encode(JSON.stringify({ alg, typ: "JWT" })));
  const payload = base64Url(encoder.encode(JSON.stringify(body)));
  const hmacKey = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const signature = new Uint8Array(await crypto.subtle.sign("HMAC", hmacKey, encoder.encode(`${header}.${payload}`)));
  return `${header}.${payload}.${base64Url(signature)}`;
}

/** A fresh P-256 key the project does not trust (for refusal tests). */
export async function untrustedKey(kid = crypto.randomUUID()): Promise<Record<string, unknown>> {
  const pair = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, ["sign", "verify"]);
  return { ...(await crypto.subtle.exportKey("jwk", pair.privateKey)), kid };
}

export interface TestUser {
  id: string;
  jwt: string;
  machineJwt: (machineId: string) => Promise<string>;
}

/**
 * A signed-up user. The subscription defaults to cancelled so that generate-strategy's call to
 * provision-machine is refused and no worker machine is started for a throwaway user.
 */
export async function createUser(tier = "pro", subscription = "cancelled"): Promise<TestUser> {
  const id = crypto.randomUUID();
  await sql`insert into auth.users (id, aud, role, email) values (${id}, 'authenticated', 'authenticated', ${`u-${id}@example.com`})`;
  await sql`update public.users set tier = ${tier}, subscription_status = ${subscription} where id = ${id}`;
  return {
    id,
    jwt: await mintJwt({ role: "authenticated", sub: id, aud: "authenticated" }),
    machineJwt: (machineId) => mintJwt({ role: "trader_machine", sub: id, machine_id: machineId }),
  };
}

export async function deleteUser(user: TestUser): Promise<void> {
  await sql`delete from auth.users where id = ${user.id}`;
}

export async function createTrader(user: TestUser): Promise<string> {
  const [row] = await sql`
    insert into public.traders (user_id, name, signal_code, ai_instructions, timeframes, check_interval,
                                reanalysis_interval, symbols)
    values (${user.id}, 'test trader', ${"def check_signal(symbol, ticker, klines):\n    return False\n"},
            'Buy oversold dips in an uptrend.', ${["1h", "4h"]}, '1h_close', '1h', ${["BTCUSDT"]})
    returning id`;
  return row.id;
}

export async function createSignal(user: TestUser, traderId: string, symbol = "BTCUSDT"): Promise<string> {
  const [row] = await sql`
    insert into public.signals (trader_id, user_id, symbol, trigger_price)
    values (${traderId}, ${user.id}, ${symbol}, 42000) returning id`;
  return row.id;
}

export async function openPosition(
  user: TestUser,
  signalId: string,
  side: "long" | "short",
  entryPrice: number,
  stopLoss: number,
  takeProfit: number,
): Promise<void> {
  await sql`update public.signals set status = 'position_open' where id = ${signalId}`;
  await sql`
    insert into public.positions (signal_id, user_id, symbol, side, entry_price, size, stop_loss, take_profit)
    values (${signalId}, ${user.id}, 'BTCUSDT', ${side}, ${entryPrice}, 0.01, ${stopLoss}, ${takeProfit})`;
}

export async function createMachine(user: TestUser, status = "running"): Promise<string> {
  const machineId = `m-${crypto.randomUUID().slice(0, 12)}`;
  await sql`
    insert into public.fly_machines (user_id, machine_id, status, destroyed_at)
    values (${user.id}, ${machineId}, ${status}, ${status === "destroyed" ? new Date() : null})`;
  return machineId;
}

export async function usageOf(user: TestUser): Promise<{ prompt: number; completion: number; reserved: number; requests: number }> {
  const rows = await sql`
    select prompt_tokens, completion_tokens, reserved_tokens, requests from public.ai_usage_daily where user_id = ${user.id}`;
  if (!rows.length) return { prompt: 0, completion: 0, reserved: 0, requests: 0 };
  const [row] = rows;
  return {
    prompt: Number(row.prompt_tokens),
    completion: Number(row.completion_tokens),
    reserved: Number(row.reserved_tokens),
    requests: Number(row.requests),
  };
}

/** Use up all but `leftTokens` of the user's budget for today. */
export async function spendBudget(user: TestUser, leftTokens: number): Promise<void> {
  await sql`
    insert into public.ai_usage_daily (user_id, usage_date, prompt_tokens)
    select ${user.id}, (now() at time zone 'utc')::date, b.daily_tokens - ${leftTokens}
      from public.users u join public.ai_token_budgets b on b.tier = u.tier where u.id = ${user.id}
    on conflict (user_id, usage_date) do update set prompt_tokens = excluded.prompt_tokens`;
}

/** A fresh stand-in API key (its own fault queue and request log), made the functions' key. */
export async function useGeminiKey(faults: Record<string, unknown>[] = []): Promise<string> {
  const key = `test-${crypto.randomUUID()}`;
  const response = await fetch(`${GEMINI_URL}/_control/faults`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ apiKey: key, faults }),
  });
  if (!response.ok) throw new Error(`setting faults failed: ${response.status} ${await response.text()}`);
  await response.body?.cancel();
  Deno.env.set("GEMINI_API_KEY", key);
  return key;
}

// deno-lint-ignore no-explicit-any
export async function geminiRequests(key: string): Promise<any[]> {
  const response = await fetch(`${GEMINI_URL}/_control/requests?apiKey=${encodeURIComponent(key)}`);
  return (await response.json()).requests;
}

export function post(url: string, body: unknown, jwt?: string, headers: Record<string, string> = {}): Request {
  return new Request(url, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      ...(jwt ? { authorization: `Bearer ${jwt}` } : {}),
      ...headers,
    },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

// deno-lint-ignore no-explicit-any
export async function json(response: Response): Promise<any> {
  return await response.json();
}

/** Klines in Binance's layout: `count` candles of `timeframeMs` ending at `endMs`, drifting by `drift` per candle. */
export function binanceKlines(count: number, timeframeMs: number, endMs: number, start = 42000, drift = 10): unknown[][] {
  const rows = [];
  for (let i = 0; i < count; i++) {
    const openTime = endMs - (count - i) * timeframeMs;
    const open = start + i * drift;
    const close = open + drift;
    rows.push([
      openTime, open.toFixed(2), (Math.max(open, close) + 50).toFixed(2), (Math.min(open, close) - 50).toFixed(2),
      close.toFixed(2), "12.5", openTime + timeframeMs - 1, "531250.0", 140, "6.1", "259250.0", "0",
    ]);
  }
  return rows;
}
