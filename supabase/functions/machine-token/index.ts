// machine-token: the entry point Supabase's Edge Runtime runs. The handler lives in handler.ts, which the
// tests and the local functions router import without starting a server.
import { handler } from "./handler.ts";

Deno.serve(handler);
