// Placeholder function: proves the /functions/v1 route, JWT verification and CORS end to end.
import { corsHeaders } from "../_shared/cors.ts";

export function handler(req: Request): Response {
  if (req.method === "OPTIONS") return new Response("ok", { headers: corsHeaders });
  return Response.json(
    { status: "ok", function: "ping", method: req.method, time: new Date().toISOString() },
    { headers: corsHeaders },
  );
}
