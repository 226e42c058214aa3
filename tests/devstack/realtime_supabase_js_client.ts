// supabase-js (current release, realtime vsn 2.0.0) subscribed to a user's traders through the gateway.
// Prints one JSON line per event: {"status": ...} for channel states, {"type", "id", "received_ms"} per change.
import { createClient } from "npm:@supabase/supabase-js@2";

const url = Deno.env.get("SUPABASE_URL")!;
const anonKey = Deno.env.get("SUPABASE_ANON_KEY")!;
const userJwt = Deno.env.get("USER_JWT")!;
const userId = Deno.env.get("USER_ID")!;

const supabase = createClient(url, anonKey, { auth: { persistSession: false, autoRefreshToken: false } });
await supabase.realtime.setAuth(userJwt);

const emit = (line: Record<string, unknown>) => console.log(JSON.stringify(line));

supabase
  .channel(`js-traders-${userId}`)
  .on(
    "postgres_changes",
    { event: "*", schema: "public", table: "traders", filter: `user_id=eq.${userId}` },
    (change) => {
      const row = (change.eventType === "DELETE" ? change.old : change.new) as { id?: string };
      emit({ type: change.eventType, id: row.id ?? null, received_ms: Date.now() });
    },
  )
  .on("system", {}, (payload) => emit({ system: payload.message, status: payload.status }))
  .subscribe((status, error) => emit({ status, error: error ? String(error) : null, vsn: supabase.realtime.vsn }));

// Stay up until the test closes stdin.
for await (const _ of Deno.stdin.readable) { /* wait */ }
await supabase.removeAllChannels();
Deno.exit(0);
