// ask: the entry point Supabase's Edge Runtime runs; the handler lives in handler.ts (tests import it without
// starting a server). The local functions router imports `handler` from here.
import { handler } from "./handler.ts";

export { handler };

if (import.meta.main) Deno.serve(handler);
