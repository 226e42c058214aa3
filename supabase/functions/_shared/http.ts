// HTTP plumbing shared by every function: JSON errors {error: {code, message}}, body reading, the wrapper
// that turns thrown errors into the right status.
import { corsHeaders } from "./cors.ts";
import { MissingEnvError } from "./env.ts";

/** An error the caller should see, with its HTTP status and a stable machine-readable code. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "HttpError";
  }
}

export function jsonResponse(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return Response.json(body, { status, headers: { ...corsHeaders, ...headers } });
}

export function errorResponse(
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): Response {
  return jsonResponse({ error: { code, message } }, status, headers);
}

export function invalidBody(message: string): HttpError {
  return new HttpError(400, "invalid_body", message);
}

// How deep a request body may nest: every function's body is a few levels (analyze-signal's klines are four).
const MAX_BODY_DEPTH = 32;

/** The field path a 400 names: `marketData.klines.1m[0][2]`, or "the body" at the top. */
function fieldName(path: string): string {
  return path === "" ? "the body" : path;
}

/** Where the first lone UTF-16 surrogate of `text` is, or -1 when the string is well-formed Unicode. */
function loneSurrogateAt(text: string): number {
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit >= 0xd800 && unit <= 0xdbff) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        i++;
        continue;
      }
      return i;
    }
    if (unit >= 0xdc00 && unit <= 0xdfff) return i;
  }
  return -1;
}

function checkString(text: string, path: string): void {
  const surrogate = loneSurrogateAt(text);
  if (surrogate >= 0) {
    throw invalidBody(`${fieldName(path)} must be well-formed Unicode: a lone UTF-16 surrogate at character ${surrogate}`);
  }
  if (text.includes("\u0000")) throw invalidBody(`${fieldName(path)} must not contain control characters (NUL, U+0000)`);
}

/**
 * Every string (keys too) well-formed Unicode without NUL, every number finite (JSON allows 1e999, which
 * parses to Infinity), at most MAX_BODY_DEPTH levels: a 400 naming the field, before any handler sees it.
 */
function checkValue(value: unknown, path: string, depth: number): void {
  if (typeof value === "string") return checkString(value, path);
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw invalidBody(`${fieldName(path)} must be a finite number`);
    return;
  }
  if (typeof value !== "object" || value === null) return;
  if (depth >= MAX_BODY_DEPTH) throw invalidBody(`${fieldName(path)} nests deeper than ${MAX_BODY_DEPTH} levels`);
  if (Array.isArray(value)) {
    value.forEach((item, index) => checkValue(item, `${path}[${index}]`, depth + 1));
    return;
  }
  for (const [key, item] of Object.entries(value)) {
    const at = path === "" ? key : `${path}.${key}`;
    checkString(key, `${fieldName(path)}'s key ${JSON.stringify(key)}`);
    checkValue(item, at, depth + 1);
  }
}

/** The fields whose strings hold invalid UTF-8 (decoded as U+FFFD), for the 400 that names them. */
function fieldsWithInvalidUtf8(bytes: Uint8Array): string[] {
  let lenient: unknown;
  try {
    lenient = JSON.parse(new TextDecoder("utf-8").decode(bytes));
  } catch {
    return [];
  }
  const found: string[] = [];
  const visit = (value: unknown, path: string, depth: number): void => {
    if (typeof value === "string" && value.includes("\ufffd")) found.push(fieldName(path));
    if (typeof value !== "object" || value === null || depth >= MAX_BODY_DEPTH) return;
    for (const [key, item] of Object.entries(value)) {
      const at = Array.isArray(value) ? `${path}[${key}]` : path === "" ? key : `${path}.${key}`;
      if (key.includes("\ufffd")) found.push(`a key of ${fieldName(path)}`);
      visit(item, at, depth + 1);
    }
  };
  visit(lenient, "", 0);
  return found;
}

/**
 * The one body reader of every function: a JSON object of at most `maxBytes`, valid UTF-8, well-formed
 * Unicode without NUL, finite numbers, bounded depth; 400 (413 when too large) naming the field otherwise.
 */
export async function readJsonObject(req: Request, maxBytes: number): Promise<Record<string, unknown>> {
  const contentType = req.headers.get("content-type") ?? "";
  if (!contentType.toLowerCase().includes("application/json")) {
    throw invalidBody("the body must be JSON (Content-Type: application/json)");
  }
  const declared = Number(req.headers.get("content-length") ?? "0");
  if (declared > maxBytes) throw new HttpError(413, "body_too_large", `the body must be at most ${maxBytes} bytes`);
  const bytes = new Uint8Array(await req.arrayBuffer());
  if (bytes.length > maxBytes) {
    throw new HttpError(413, "body_too_large", `the body must be at most ${maxBytes} bytes`);
  }
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    const fields = fieldsWithInvalidUtf8(bytes);
    throw invalidBody(fields.length ? `${fields.join(", ")} must be valid UTF-8` : "the body is not valid UTF-8");
  }
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch (error) {
    throw invalidBody(`the body is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw invalidBody("the body must be a JSON object");
  }
  checkValue(body, "", 0);
  return body as Record<string, unknown>;
}

type Handler = (req: Request) => Promise<Response>;

/** Wrap a POST handler: CORS preflight, 405 for other methods, thrown errors to JSON responses. */
export function postHandler(name: string, handle: Handler): (req: Request) => Promise<Response> {
  return async (req: Request): Promise<Response> => {
    if (req.method === "OPTIONS") return new Response("ok", { headers: corsHeaders });
    if (req.method !== "POST") {
      return errorResponse(405, "method_not_allowed", `${name} accepts POST only`, { Allow: "POST, OPTIONS" });
    }
    try {
      return await handle(req);
    } catch (error) {
      if (error instanceof HttpError) return errorResponse(error.status, error.code, error.message, error.headers);
      if (error instanceof MissingEnvError) {
        // The operator needs the variable's name (logged); the caller only needs to know it is not their fault.
        console.error(`${name}: ${error.message}`);
        return errorResponse(500, "misconfigured", `${name} is misconfigured; the operator has been told why`);
      }
      console.error(`${name}: unexpected error`, error);
      return errorResponse(500, "internal_error", `${name} failed unexpectedly`);
    }
  };
}
