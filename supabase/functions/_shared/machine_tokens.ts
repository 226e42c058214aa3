// What a worker machine is given to prove who it is: a trader_machine JWT for the database (RLS compares its
// `machine_id` claim with fly_machines.machine_id) and the bearer secret its own HTTP API expects. The secret
// is derived, never stored: base64url(HMAC-SHA256(MACHINE_SECRET_KEY, user_id)), so the lifecycle functions
// can present it later without a readable column holding it.

const encoder = new TextEncoder();
const hmacKeys = new Map<string, Promise<CryptoKey>>();

function signingKey(secret: string): Promise<CryptoKey> {
  let key = hmacKeys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
    hmacKeys.set(secret, key);
  }
  return key;
}

function base64Url(bytes: Uint8Array): string {
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

async function hmac(secret: string, message: string): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.sign("HMAC", await signingKey(secret), encoder.encode(message)));
}

export const DEFAULT_MACHINE_TOKEN_TTL_DAYS = 90;

export interface MachineTokenClaims {
  userId: string;
  machineId: string;
  issuer?: string;
  nowSecs?: number;
  ttlSecs?: number;
}

/** An HS256 trader_machine JWT shaped like the project's others (iss, aud, iat, exp, role, sub, machine_id). */
export async function mintMachineToken(secret: string, claims: MachineTokenClaims): Promise<string> {
  if (secret.length < 32) throw new Error("the JWT signing secret must be at least 32 characters");
  const now = claims.nowSecs ?? Math.floor(Date.now() / 1000);
  const ttl = claims.ttlSecs ?? DEFAULT_MACHINE_TOKEN_TTL_DAYS * 86_400;
  const header = base64Url(encoder.encode(JSON.stringify({ alg: "HS256", typ: "JWT" })));
  const payload = base64Url(encoder.encode(JSON.stringify({
    iss: claims.issuer ?? "supabase",
    aud: "authenticated",
    role: "trader_machine",
    sub: claims.userId,
    machine_id: claims.machineId,
    iat: now,
    exp: now + ttl,
    // Every mint is distinct, so a re-minted token is never byte-identical to the one it replaces.
    jti: crypto.randomUUID(),
  })));
  const signature = base64Url(await hmac(secret, `${header}.${payload}`));
  return `${header}.${payload}.${signature}`;
}

/** The machine's HTTP API bearer secret for `userId` (43 characters, stable for a given key). */
export async function machineApiSecret(key: string, userId: string): Promise<string> {
  if (key.length < 32) throw new Error("MACHINE_SECRET_KEY must be at least 32 characters");
  return base64Url(await hmac(key, `machine-api-secret:${userId}`));
}
