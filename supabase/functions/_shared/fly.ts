// Fly Machines API client (https://api.machines.dev/v1; the devstack stand-in locally): the calls the
// lifecycle functions make, Fly's error bodies turned into FlyApiError, 429/5xx retried with jittered backoff,
// and /wait looped in calls of at most 60 s (Fly's cap) until a deadline.
import { optionalEnv, positiveIntEnv, requireEnv } from "./env.ts";

export const FLY_MAX_WAIT_SECS = 60;

export interface FlyEnv {
  apiUrl: string;
  token: string;
  app: string;
  timeoutMs: number;
  attempts: number;
  backoffBaseMs: number;
}

export function flyEnv(): FlyEnv {
  return {
    apiUrl: optionalEnv("FLY_API_URL", "https://api.machines.dev/v1").replace(/\/+$/, ""),
    token: requireEnv("FLY_API_TOKEN"),
    app: requireEnv("FLY_APP_NAME"),
    timeoutMs: positiveIntEnv("FLY_TIMEOUT_MS", 15_000),
    attempts: positiveIntEnv("FLY_ATTEMPTS", 4),
    backoffBaseMs: positiveIntEnv("FLY_BACKOFF_BASE_MS", 250),
  };
}

export interface MachineConfig {
  image: string;
  env?: Record<string, string>;
  guest?: { cpu_kind?: string; cpus?: number; memory_mb?: number };
  restart?: { policy?: string; max_retries?: number };
  metadata?: Record<string, string>;
  checks?: Record<string, unknown>;
  stop_config?: { signal?: string; timeout?: string };
  auto_destroy?: boolean;
  [key: string]: unknown;
}

export interface FlyMachine {
  id: string;
  name: string;
  state: string;
  region: string;
  instance_id: string;
  private_ip?: string;
  config?: MachineConfig;
  image_ref?: { tag?: string };
  created_at?: string;
  updated_at?: string;
}

/** The Machines API said no (or could not be reached: status 0). `message` is Fly's `error` text. */
export class FlyApiError extends Error {
  constructor(readonly status: number, message: string, readonly operation: string) {
    super(`${operation}: ${status ? `HTTP ${status}: ` : ""}${message}`);
    this.name = "FlyApiError";
  }

  get retryable(): boolean {
    return this.status === 0 || this.status === 429 || this.status >= 500;
  }
}

/** Image tag: what the worker reports as its version ("registry.fly.io/app:v42" -> "v42"). */
export function imageTag(image: string): string {
  const name = image.split("@")[0];
  const lastSlash = name.lastIndexOf("/");
  const colon = name.lastIndexOf(":");
  return colon > lastSlash ? name.slice(colon + 1) : "latest";
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class FlyClient {
  constructor(readonly env: FlyEnv) {}

  private machinesPath(suffix = ""): string {
    return `/apps/${encodeURIComponent(this.env.app)}/machines${suffix}`;
  }

  private async request<T>(
    operation: string,
    method: string,
    path: string,
    { body, nonce, timeoutMs, retry = true }: { body?: unknown; nonce?: string; timeoutMs?: number; retry?: boolean } = {},
  ): Promise<T> {
    const headers: Record<string, string> = { authorization: `Bearer ${this.env.token}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (nonce) headers["fly-machine-lease-nonce"] = nonce;
    const attempts = retry ? this.env.attempts : 1;
    for (let attempt = 1; ; attempt++) {
      let error: FlyApiError;
      let retryAfterMs = 0;
      try {
        const response = await fetch(`${this.env.apiUrl}${path}`, {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(timeoutMs ?? this.env.timeoutMs),
        });
        const text = await response.text();
        if (response.ok) return (text ? JSON.parse(text) : {}) as T;
        let message = text.slice(0, 300);
        try {
          const parsed = JSON.parse(text);
          if (typeof parsed?.error === "string") message = parsed.error;
        } catch { /* not JSON: keep the text */ }
        error = new FlyApiError(response.status, message, operation);
        retryAfterMs = Number(response.headers.get("retry-after") ?? "0") * 1000 || 0;
      } catch (cause) {
        error = new FlyApiError(0, (cause as Error).name === "TimeoutError" ? "timed out" : (cause as Error).message, operation);
      }
      if (!error.retryable || attempt >= attempts) throw error;
      const ceilingMs = this.env.backoffBaseMs * 2 ** (attempt - 1);
      await sleep(Math.max(retryAfterMs, Math.random() * ceilingMs));
    }
  }

  list(): Promise<FlyMachine[]> {
    return this.request("list machines", "GET", this.machinesPath());
  }

  get(machineId: string): Promise<FlyMachine> {
    return this.request(`get machine ${machineId}`, "GET", this.machinesPath(`/${machineId}`));
  }

  create(body: { name: string; region: string; config: MachineConfig; skip_launch?: boolean }): Promise<FlyMachine> {
    // Not retried: a create that timed out may have happened; the caller reconciles by name instead.
    return this.request("create machine", "POST", this.machinesPath(), { body, retry: false });
  }

  update(
    machineId: string,
    body: { config: MachineConfig; current_version?: string; skip_launch?: boolean },
    nonce?: string,
  ): Promise<FlyMachine> {
    return this.request(`update machine ${machineId}`, "POST", this.machinesPath(`/${machineId}`), { body, nonce });
  }

  start(machineId: string, nonce?: string): Promise<unknown> {
    return this.request(`start machine ${machineId}`, "POST", this.machinesPath(`/${machineId}/start`), { nonce });
  }

  stop(machineId: string, stop: { signal?: string; timeout?: string }, nonce?: string): Promise<unknown> {
    return this.request(`stop machine ${machineId}`, "POST", this.machinesPath(`/${machineId}/stop`), { body: stop, nonce });
  }

  destroy(machineId: string, { force = false, nonce }: { force?: boolean; nonce?: string } = {}): Promise<unknown> {
    const query = force ? "?force=true" : "";
    return this.request(`destroy machine ${machineId}`, "DELETE", this.machinesPath(`/${machineId}${query}`), { nonce });
  }

  /** Take a lease (exclusive right to change the machine); 409 FlyApiError when someone else holds one. */
  async acquireLease(machineId: string, ttlSecs: number, description: string): Promise<string> {
    const lease = await this.request<{ data?: { nonce?: string }; nonce?: string }>(
      `lease machine ${machineId}`,
      "POST",
      this.machinesPath(`/${machineId}/lease`),
      { body: { ttl: ttlSecs, description } },
    );
    const nonce = lease.data?.nonce ?? lease.nonce;
    if (!nonce) throw new FlyApiError(502, "lease response carried no nonce", `lease machine ${machineId}`);
    return nonce;
  }

  /** Extend a lease this caller holds (the same POST, presenting its nonce). */
  async refreshLease(machineId: string, nonce: string, ttlSecs: number): Promise<void> {
    await this.request(`refresh lease ${machineId}`, "POST", this.machinesPath(`/${machineId}/lease`), {
      body: { ttl: ttlSecs },
      nonce,
    });
  }

  async releaseLease(machineId: string, nonce: string): Promise<void> {
    try {
      await this.request(`release lease ${machineId}`, "DELETE", this.machinesPath(`/${machineId}/lease`), { nonce });
    } catch (error) {
      // The lease expires by itself; a failed release must not fail the operation it protected.
      console.warn(`fly: releasing the lease failed machine_id=${machineId}: ${(error as Error).message}`);
    }
  }

  /**
   * Wait until the machine (at `version`, when given) reaches `state`, looping over Fly's 60 s /wait until
   * `deadlineMs` (epoch ms). Returns false when the deadline passes first.
   */
  async waitFor(machineId: string, state: string, deadlineMs: number, version?: string): Promise<boolean> {
    while (true) {
      const remainingSecs = Math.floor((deadlineMs - Date.now()) / 1000);
      if (remainingSecs < 1) return false;
      const query = new URLSearchParams({ state, timeout: String(Math.min(FLY_MAX_WAIT_SECS, remainingSecs)) });
      if (version) query.set("version", version);
      try {
        await this.request(`wait for machine ${machineId} ${state}`, "GET", this.machinesPath(`/${machineId}/wait?${query}`), {
          timeoutMs: (Math.min(FLY_MAX_WAIT_SECS, remainingSecs) + 10) * 1000,
        });
        return true;
      } catch (error) {
        if (!(error instanceof FlyApiError) || error.status !== 408) throw error;
      }
    }
  }
}
