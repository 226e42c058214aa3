// Who is calling: verify the HS256 JWT ourselves (the platform's verify_jwt only checks the signature,
// and tests call handlers directly), then check the role the function allows.
import { HttpError } from "./http.ts";

export type Role = "anon" | "authenticated" | "trader_machine" | "service_role";

export interface Caller {
  role: Role;
  /** The user the token acts for (JWT `sub`); null only for anon and service_role. */
  userId: string | null;
  /** The Fly machine a trader_machine token was minted for. */
  machineId: string | null;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const ROLES: ReadonlySet<string> = new Set(["anon", "authenticated", "trader_machine", "service_role"]);
const keys = new Map<string, Promise<CryptoKey>>();

export function isUuid(value: unknown): value is string {
  return typeof value === "string" && UUID.test(value);
}

function hmacKey(secret: string): Promise<CryptoKey> {
  let key = keys.get(secret);
  if (!key) {
    key = crypto.subtle.importKey("raw", new TextEncoder().encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
      "verify",
    ]);
    keys.set(secret, key);
  }
  return key;
}

function base64UrlDecode(segment: string): Uint8Array<ArrayBuffer> {
  const base64 = segment.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(segment.length / 4) * 4, "=");
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

function unauthorized(message: string): HttpError {
  return new HttpError(401, "invalid_jwt", message, { "WWW-Authenticate": "Bearer" });
}

/** Verify the request's bearer token and return the caller; 401 when it is missing or not valid. */
export async function authenticate(req: Request, jwtSecret: string, nowMs = Date.now()): Promise<Caller> {
  const authorization = req.headers.get("authorization") ?? "";
  if (!/^bearer\s+/i.test(authorization)) {
    throw new HttpError(401, "missing_authorization", "missing 'Authorization: Bearer <jwt>' header", {
      "WWW-Authenticate": "Bearer",
    });
  }
  const token = authorization.replace(/^bearer\s+/i, "").trim();
  const parts = token.split(".");
  if (parts.length !== 3) throw unauthorized("malformed JWT");
  let header: Record<string, unknown>;
  let claims: Record<string, unknown>;
  try {
    header = JSON.parse(new TextDecoder().decode(base64UrlDecode(parts[0])));
    claims = JSON.parse(new TextDecoder().decode(base64UrlDecode(parts[1])));
  } catch {
    throw unauthorized("malformed JWT");
  }
  if (header.alg !== "HS256") throw unauthorized(`unsupported JWT algorithm ${String(header.alg)}`);
  let valid = false;
  try {
    valid = await crypto.subtle.verify(
      "HMAC",
      await hmacKey(jwtSecret),
      base64UrlDecode(parts[2]),
      new TextEncoder().encode(`${parts[0]}.${parts[1]}`),
    );
  } catch {
    throw unauthorized("malformed JWT");
  }
  if (!valid) throw unauthorized("invalid JWT signature");
  if (typeof claims.exp === "number" && claims.exp * 1000 <= nowMs) throw unauthorized("JWT expired");
  if (typeof claims.nbf === "number" && claims.nbf * 1000 > nowMs) throw unauthorized("JWT not yet valid");
  const role = typeof claims.role === "string" ? claims.role : "anon";
  if (!ROLES.has(role)) throw unauthorized(`unknown role '${role}' in JWT`);
  const userId = claims.sub === undefined ? null : claims.sub;
  if (userId !== null && !isUuid(userId)) throw unauthorized("JWT 'sub' is not a user id");
  if ((role === "authenticated" || role === "trader_machine") && userId === null) {
    throw unauthorized(`${role} JWTs must carry 'sub'`);
  }
  const machineId = typeof claims.machine_id === "string" ? claims.machine_id : null;
  if (role === "trader_machine" && machineId === null) throw unauthorized("trader_machine JWTs must carry 'machine_id'");
  return { role: role as Role, userId: userId as string | null, machineId };
}

/** 403 unless the caller has one of `roles`. */
export function requireRole(caller: Caller, roles: readonly Role[], action: string): void {
  if (!roles.includes(caller.role)) {
    throw new HttpError(403, "forbidden", `role '${caller.role}' may not ${action}; allowed: ${roles.join(", ")}`);
  }
}
