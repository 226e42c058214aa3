// Placeholder function: proves the /functions/v1 route, JWT verification and CORS end to end. The gateway
// verifies the JWT (verify_jwt = true) and ping then verifies its caller as every function does, so a
// destroyed or replaced machine's token, which the gateway cannot know is revoked, is refused here too.
import { authenticate } from "../_shared/auth.ts";
import { corsHeaders } from "../_shared/cors.ts";
import { errorResponse, HttpError } from "../_shared/http.ts";

export async function handler(req: Request): Promise<Response> {
  if (req.method === "OPTIONS") return new Response("ok", { headers: corsHeaders });
  try {
    await authenticate(req);
  } catch (error) {
    if (error instanceof HttpError) return errorResponse(error.status, error.code, error.message, error.headers);
    throw error;
  }
  return Response.json(
    { status: "ok", function: "ping", method: req.method, time: new Date().toISOString() },
    { headers: corsHeaders },
  );
}
