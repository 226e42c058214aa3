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

/** Read a JSON object body of at most `maxBytes`; 400 for anything else. */
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
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder().decode(bytes));
  } catch (error) {
    throw invalidBody(`the body is not valid JSON: ${(error as Error).message}`);
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw invalidBody("the body must be a JSON object");
  }
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
