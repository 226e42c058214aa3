// What a worker machine is given to prove who it is:
//   - a machine credential, base64url(HMAC-SHA256(MACHINE_SECRET_KEY, machine id + token generation)), which
//     it exchanges at machine-token for short-lived trader_machine JWTs while its machine row is live;
//   - those JWTs, ES256-signed with the operator's key the project trusts (MACHINE_SIGNING_KEY), so PostgREST,
//     Realtime and the functions verify them with the project's JWKS;
//   - the bearer secret its own HTTP API expects, base64url(HMAC-SHA256(MACHINE_SECRET_KEY, user id)).
// Both secrets are derived, never stored, so the functions can check or present them later.
import { importJWK, SignJWT } from "npm:jose@6.2.19";

const encoder = new TextEncoder();
const hmacKeys = new Map<string, Promise<CryptoKey>>();

function hmacKey(secret: string): Promise<CryptoKey> {
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
  return new Uint8Array(await crypto.subtle.sign("HMAC", await hmacKey(secret), encoder.encode(message)));
}

// A machine token lives an hour at most; the worker renews it through machine-token while its machine is live.
export const MAX_MACHINE_TOKEN_TTL_SECS = 3600;

export interface MachineTokenClaims {
  userId: string;
  machineId: string;
  /** fly_machines.token_generation when minted: a newer generation (replaced machine) refuses this token. */
  generation: number;
  issuer: string;
  nowSecs?: number;
  ttlSecs?: number;
}

const signingKeys = new Map<string, Promise<{ kid: string; key: CryptoKey }>>();

/** The operator's ES256 private key (a JWK as `supabase gen signing-key` writes it), imported once. */
function signingKey(jwkJson: string): Promise<{ kid: string; key: CryptoKey }> {
  let loaded = signingKeys.get(jwkJson);
  if (!loaded) {
    loaded = (async () => {
      const parsed = JSON.parse(jwkJson);
      const jwk = Array.isArray(parsed) ? parsed[0] : parsed;
      if (!jwk || jwk.kty !== "EC" || jwk.crv !== "P-256" || typeof jwk.d !== "string" || typeof jwk.kid !== "string") {
        throw new Error("MACHINE_SIGNING_KEY must be an ES256 (P-256) private JWK with a kid");
      }
      // Only the key material: the file's key_ops also list "verify", which a private CryptoKey refuses.
      const { kty, crv, x, y, d } = jwk;
      return { kid: jwk.kid, key: await importJWK({ kty, crv, x, y, d }, "ES256") as unknown as CryptoKey };
    })();
    loaded.catch(() => signingKeys.delete(jwkJson));
    signingKeys.set(jwkJson, loaded);
  }
  return loaded;
}

/** An ES256 trader_machine JWT (role, sub, machine_id, machine_gen, iss, aud, iat, exp, jti) with the key's kid. */
export async function mintMachineToken(signingKeyJwk: string, claims: MachineTokenClaims): Promise<string> {
  const { kid, key } = await signingKey(signingKeyJwk);
  const now = claims.nowSecs ?? Math.floor(Date.now() / 1000);
  const ttl = Math.min(claims.ttlSecs ?? MAX_MACHINE_TOKEN_TTL_SECS, MAX_MACHINE_TOKEN_TTL_SECS);
  return await new SignJWT({
    role: "trader_machine",
    machine_id: claims.machineId,
    machine_gen: claims.generation,
  })
    .setProtectedHeader({ alg: "ES256", kid, typ: "JWT" })
    .setIssuer(claims.issuer)
    .setAudience("authenticated")
    .setSubject(claims.userId)
    .setIssuedAt(now)
    .setExpirationTime(now + ttl)
    // Every mint is distinct, so a re-minted token is never byte-identical to the one it replaces.
    .setJti(crypto.randomUUID())
    .sign(key);
}

/** The secret a machine presents to machine-token to renew its token: bound to the machine and its generation,
 * derived again when needed (never stored), worthless once the machine is destroyed or replaced. */
export async function machineCredential(key: string, machineId: string, generation: number): Promise<string> {
  if (key.length < 32) throw new Error("MACHINE_SECRET_KEY must be at least 32 characters");
  return base64Url(await hmac(key, `machine-credential:${machineId}:${generation}`));
}

/** The machine's HTTP API bearer secret for `userId` (43 characters, stable for a given key). */
export async function machineApiSecret(key: string, userId: string): Promise<string> {
  if (key.length < 32) throw new Error("MACHINE_SECRET_KEY must be at least 32 characters");
  return base64Url(await hmac(key, `machine-api-secret:${userId}`));
}
