// Local Edge Functions runtime: what the Supabase CLI's edge-runtime main service does, on plain Deno.
//
// The gateway strips /functions/v1, so a request arrives as /<slug>/...; it is handed unchanged to the
// `handler` exported by supabase/functions/<slug>/handler.ts. In production the Edge Runtime runs the
// function's index.ts, which only calls Deno.serve(handler); here one Deno process serves every function
// through the same handler. For every function whose config.toml entry does not set verify_jwt = false, the
// platform's check runs first, as the CLI's edge runtime does it (supabase/cli internal/functions/serve/
// templates/main.ts, verifyHybridJWT): HS256 with the legacy secret, ES256/RS256 with the project's JWKS.
// Refusals are 401 in the project's error shape, naming the reason (the CLI answers {"msg": "Invalid JWT"}).
const functionsDir = requireEnv("FUNCTIONS_DIR");
// The platform's own secret: the functions never see it (the CLI filters SUPABASE_INTERNAL_* out too).
const jwtSecret = requireEnv("SUPABASE_INTERNAL_JWT_SECRET");
Deno.env.delete("SUPABASE_INTERNAL_JWT_SECRET");
const jwksUrl = new URL(`${requireEnv("SUPABASE_URL")}/auth/v1/.well-known/jwks.json`);
// Loaded on the first verify_jwt check, so a stack whose functions all verify themselves needs no jose.
let verifier: Promise<(token: string) => Promise<string | null>> | null = null;
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

/** Null when the bearer token verifies (HS256 with the legacy secret, ES256/RS256 with the JWKS); else why not. */
function jwtProblem(token: string): Promise<string | null> {
  verifier ??= import("npm:jose@6.2.19").then((jose) => {
    const jwks = jose.createRemoteJWKSet(jwksUrl);
    const secret = new TextEncoder().encode(jwtSecret);
    return async (jwt: string) => {
      let alg: unknown;
      try {
        alg = jose.decodeProtectedHeader(jwt).alg;
      } catch {
        return "malformed JWT";
      }
      try {
        if (alg === "HS256") await jose.jwtVerify(jwt, secret, { algorithms: ["HS256"] });
        else if (alg === "ES256" || alg === "RS256") await jose.jwtVerify(jwt, jwks, { algorithms: ["ES256", "RS256"] });
        else return `unsupported JWT algorithm ${String(alg)}`;
        return null;
      } catch (error) {
        if (error instanceof jose.errors.JWTExpired) return "JWT expired";
        if (error instanceof jose.errors.JWSSignatureVerificationFailed) return "invalid JWT signature";
        if (error instanceof jose.errors.JWKSNoMatchingKey) return "JWT signed with an unknown key (kid)";
        return "malformed JWT";
      }
    };
  });
  return verifier.then((verify) => verify(token));
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
    if (!/^bearer\s+\S/i.test(authorization)) {
      return errorResponse(401, "missing_authorization", "missing 'Authorization: Bearer <jwt>' header");
    }
    const problem = await jwtProblem(authorization.replace(/^bearer\s+/i, "").trim());
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
