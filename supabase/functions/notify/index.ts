// notify: deliver notifications and operator alerts to webhooks and Telegram (see handler.ts).
import { handler } from "./handler.ts";

export { handler };

if (import.meta.main) Deno.serve(handler);
