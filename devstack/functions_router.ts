// Local Edge Functions runtime: what the Supabase CLI's edge-runtime main service does, on plain Deno.
//
// The gateway strips /functions/v1, so a request arrives as /<slug>/...; it is handed unchanged to the
// `handler` exported by supabase/functions/<slug>/handler.ts. In production the Edge Runtime runs the
// function's index.ts, which only calls Deno.serve(handler); here one Deno process serves every function
// through the same handler. JWTs are verified here with the project secret for every function whose
// config.toml entry does not set verify_jwt = false.

const functionsDir = requireEnv("FUNCTIONS_DIR");
const jwtSecret = requireEnv("SUPABASE_JWT_SECRET");
const verifyJwtBySlug: Record<string, boolean> = JSON.parse(Deno.env.get("FUNCTIONS_VERIFY_JWT") ?? "{}");
const port = Number(requireEnv("FUNCTIONS_PORT"));

const SLUG = /^[A-Za-z][A-Za-z0-9_-]*$/;
const corsHeaders = {
  "Access-Control-Allow-Origin": "*",
  "Access-Control-Allow-Headers": "authorization, x-client-info, apikey, content-type",
  "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, OPTIONS",
};

type Handler = (req: Request) => Response | Promise<Response>;
const handlers = new Map<string, Promise<Handler>>();

function requireEnv(name: string): string {
  const value = Deno.env.get(name);
  if (!value) {
    console.error(`functions router: environment variable ${name} is not set`);
    Deno.exit(2);
  }
  return value;
}

function errorResponse(status: number, code: string, message: string): Response {
  return Response.json({ error: { code, message } }, { status, headers: corsHeaders });
}

async function functionExists(slug: string): Promise<boolean> {
  try {
    return (await Deno.stat(`${functionsDir}/${slug}/index.ts`)).isFile;
  } catch {
    return false;
  }
}

/**
 * Load a module in a throwaway worker; resolve with the reason it failed, or null. Deno remembers a failed
 * load (an npm download that failed, a missing file) for the rest of an isolate's life, so a module is
 * imported here only once a fresh isolate has loaded it, and a failed load is tried again on a later request.
 */
function loadProblemInFreshIsolate(url: string): Promise<string | null> {
  const loader = `await import(${JSON.stringify(url)}); postMessage("loaded");`;
  const worker = new Worker(`data:application/javascript,${encodeURIComponent(loader)}`, { type: "module" });
  return new Promise((resolve) => {
    worker.onmessage = () => {
      worker.terminate();
      resolve(null);
    };
    worker.onerror = (event) => {
      event.preventDefault();
      worker.terminate();
      resolve(event.message);
    };
  });
}

function loadHandler(slug: string): Promise<Handler> {
  let loading = handlers.get(slug);
  if (!loading) {
    const url = `file://${functionsDir}/${slug}/handler.ts`;
    loading = loadProblemInFreshIsolate(url).then(async (problem) => {
      if (problem !== null) throw new Error(problem);
      const module = await import(url);
      if (typeof module.handler !== "function") {
        throw new Error(`supabase/functions/${slug}/handler.ts does not export a handler(req) function`);
      }
      return module.handler as Handler;
    });
    // A module that failed to load is retried on the next request rather than cached broken.
    loading.catch(() => handlers.delete(slug));
    handlers.set(slug, loading);
  }
  return loading;
}

function base64UrlDecode(segment: string): Uint8Array {
  const base64 = segment.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(segment.length / 4) * 4, "=");
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

const hmacKey = crypto.subtle.importKey(
  "raw",
  new TextEncoder().encode(jwtSecret),
  { name: "HMAC", hash: "SHA-256" },
  false,
  ["verify"],
);

/** Return null if the HS256 token is valid and unexpired, else the reason it is not. */
async function jwtProblem(token: string): Promise<string | null> {
  const parts = token.split(".");
  if (parts.length !== 3) return "malformed JWT";
  try {
    const header = JSON.parse(new TextDecoder().decode(base64UrlDecode(parts[0])));
    if (header.alg !== "HS256") return `unsupported JWT algorithm ${header.alg}`;
    const valid = await crypto.subtle.verify(
      "HMAC",
      await hmacKey,
      base64UrlDecode(parts[2]),
      new TextEncoder().encode(`${parts[0]}.${parts[1]}`),
    );
    if (!valid) return "invalid JWT signature";
    const claims = JSON.parse(new TextDecoder().decode(base64UrlDecode(parts[1])));
    if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) return "JWT expired";
    return null;
  } catch {
    return "malformed JWT";
  }
}

async function route(req: Request): Promise<Response> {
  const url = new URL(req.url);
  if (url.pathname === "/_internal/health") return Response.json({ status: "ok" });

  const slug = url.pathname.split("/")[1] ?? "";
  if (!SLUG.test(slug) || !(await functionExists(slug))) {
    return errorResponse(404, "function_not_found", `no function named '${slug}'`);
  }
  if (req.method !== "OPTIONS" && verifyJwtBySlug[slug] !== false) {
    const authorization = req.headers.get("authorization") ?? "";
    if (!authorization.toLowerCase().startsWith("bearer ")) {
      return errorResponse(401, "missing_authorization", "missing 'Authorization: Bearer <jwt>' header");
    }
    const problem = await jwtProblem(authorization.slice(7).trim());
    if (problem) return errorResponse(401, "invalid_jwt", problem);
  }

  let handler: Handler;
  try {
    handler = await loadHandler(slug);
  } catch (error) {
    console.error(`function ${slug} failed to load:`, error);
    return errorResponse(503, "function_boot_error", `function '${slug}' failed to start`);
  }
  try {
    return await handler(req);
  } catch (error) {
    console.error(`function ${slug} threw:`, error);
    return errorResponse(500, "function_error", `function '${slug}' failed`);
  }
}

Deno.serve({ hostname: "127.0.0.1", port, onListen: () => console.log(`functions router on :${port}`) }, route);
