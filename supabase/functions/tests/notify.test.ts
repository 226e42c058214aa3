// notify: every kind reaches the user's webhook and the Telegram stand-in exactly once, across receiver
// faults (backoff honoured) and a run that died after claiming; operator alerts go to the operator's
// channels; permanent refusals fail without leaking the bot token; only service_role may run it.
import assert from "node:assert/strict";
import { handler } from "../notify/handler.ts";
import { createUser, deleteUser, env, json, post, sql, stackTest, type TestUser } from "./helpers.ts";

// Inserting deliveries also makes the database call notify through pg_net (as production does), so these
// tests run it alongside that call and judge by what the receivers got and what the database recorded.
const URL = "http://local/notify";
const TELEGRAM_URL = env("TELEGRAM_API_URL");
const KINDS = [
  "signal_new", "position_opened", "position_closed", "trade_failed", "trader_error",
  "machine_error", "machine_resized", "budget_exceeded",
];

interface Hook {
  url: string;
  received: { status: number; idempotencyKey: string | null; body: Record<string, unknown> }[];
  close: () => Promise<void>;
}

/** A local webhook receiver answering the scripted statuses first, then 200. */
function webhook(script: number[] = []): Hook {
  const received: Hook["received"] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, async (req) => {
    const status = script.shift() ?? 200;
    received.push({ status, idempotencyKey: req.headers.get("idempotency-key"), body: await req.json() });
    return new Response(status === 200 ? "ok" : "busy", { status, headers: status === 503 ? { "retry-after": "30" } : {} });
  });
  return { url: `http://127.0.0.1:${server.addr.port}/hook`, received, close: () => server.shutdown() };
}

function botToken(): string {
  return `${Math.floor(Math.random() * 1e9)}:${crypto.randomUUID().replaceAll("-", "")}`;
}

async function telegramMessages(token: string): Promise<{ text: string; chat_id: string }[]> {
  return (await (await fetch(`${TELEGRAM_URL}/_control/messages?token=${encodeURIComponent(token)}`)).json()).messages;
}

async function telegramFaults(token: string, faults: Record<string, unknown>[]): Promise<void> {
  const response = await fetch(`${TELEGRAM_URL}/_control/faults`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token, faults }),
  });
  assert.equal(response.status, 200, await response.text());
}

async function subscribe(user: TestUser, hook: Hook, token: string): Promise<void> {
  await sql`insert into public.notification_preferences (user_id, webhook_url) values (${user.id}, ${hook.url})`;
  const response = await fetch(`${env("SUPABASE_URL")}/rest/v1/rpc/set_telegram_bot`, {
    method: "POST",
    headers: { apikey: env("SUPABASE_ANON_KEY"), authorization: `Bearer ${user.jwt}`, "content-type": "application/json" },
    body: JSON.stringify({ bot_token: token, chat_id: "424242" }),
  });
  assert.equal(response.status, 204, await response.text());
}

async function run(): Promise<Record<string, number>> {
  const response = await handler(post(URL, {}, env("SUPABASE_SERVICE_ROLE_KEY")));
  assert.equal(response.status, 200);
  return await json(response);
}

interface Delivery { channel: string; status: string; attempts: number; due_in_secs: number }

async function deliveries(user: TestUser): Promise<Delivery[]> {
  return await sql`
    select channel::text, status::text, attempts, extract(epoch from next_attempt_at - now())::float as due_in_secs
      from public.notification_deliveries where user_id = ${user.id} order by channel, created_at`;
}

/** Until every delivery of the user has been attempted, none is due, and none is in flight (in this test's run,
 * the minutely pg_cron run, or one that died after claiming). */
async function settled(user: TestUser, count: number): Promise<void> {
  const done = (d: Delivery) => d.attempts > 0 && d.status !== "delivering" && !(d.status === "pending" && d.due_in_secs <= 0);
  for (let i = 0; i < 100; i++) {
    const rows = await deliveries(user);
    if (rows.length === count && rows.every(done)) return;
    await run();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`deliveries of ${user.id} did not settle`);
}

/** Let time pass for the retries this user is waiting on (instead of sleeping through the backoff). */
async function fastForward(user: TestUser): Promise<void> {
  await sql`update public.notification_deliveries set next_attempt_at = now()
             where user_id = ${user.id} and status = 'pending'`;
}

stackTest("notify: every kind reaches the webhook and Telegram exactly once across faults and retries", async () => {
  const user = await createUser();
  const hook = webhook([503, 500, 429]);
  const token = botToken();
  try {
    await subscribe(user, hook, token);
    await telegramFaults(token, [{ kind: "rate_limit", retryAfterSecs: 7 }, { kind: "server_error" }]);
    const ids: string[] = [];
    for (const kind of KINDS) {
      const [row] = await sql`insert into public.notifications (user_id, kind, title, body)
                              values (${user.id}, ${kind}, ${`title ${kind}`}, 'body') returning id`;
      ids.push(row.id);
    }

    await settled(user, 16);
    const waiting = (await deliveries(user)).filter((delivery) => delivery.status === "pending");
    // Runs the database started (pg_net on each insert, pg_cron each minute) may claim a retry first: each
    // round waits until no claim is in flight.
    for (let round = 0; round < 5 && (await deliveries(user)).some((d) => d.status !== "delivered"); round++) {
      await fastForward(user);
      await settled(user, 16);
    }

    assert.equal(waiting.length, 5, "three webhook and two Telegram attempts were refused and wait to be retried");
    assert.ok(waiting.some((d) => d.channel === "telegram" && d.due_in_secs > 6), "Telegram's retry_after (7 s) is honoured");
    assert.ok(waiting.some((d) => d.channel === "webhook" && d.due_in_secs > 25), "the webhook's Retry-After (30 s) is honoured");
    assert.ok(waiting.every((d) => d.due_in_secs > 0.5), "every retry waits");
    const final = await deliveries(user);
    assert.equal(final.length, 16);
    assert.ok(final.every((d) => d.status === "delivered"), JSON.stringify(final));
    const accepted = hook.received.filter((request) => request.status === 200);
    assert.deepEqual(accepted.map((request) => request.idempotencyKey).sort(), [...ids].sort(), "one accepted POST per notification");
    assert.ok(accepted.every((request) => request.body.id === request.idempotencyKey && request.body.type === "notification"));
    const messages = await telegramMessages(token);
    assert.deepEqual(messages.map((message) => message.text).sort(), KINDS.map((kind) => `title ${kind}\nbody`).sort());
    assert.ok(messages.every((message) => message.chat_id === "424242"));
  } finally {
    await hook.close();
    await deleteUser(user);
  }
});

stackTest("notify: a run that died after claiming leaves the deliveries to the next run once its claim lapses", async () => {
  const user = await createUser();
  const hook = webhook();
  const token = botToken();
  try {
    await subscribe(user, hook, token);
    // A run that claims in the same transaction as the insert, then dies: nothing else can take them first.
    await sql.begin(async (tx) => {
      await tx`insert into public.notifications (user_id, kind, title) values (${user.id}, 'position_opened', 'Opened')`;
      await tx`select count(*) from public.claim_notification_deliveries(500, 30)`;
    });

    const whileClaimed = await run();
    await sql`update public.notification_deliveries set claimed_until = now() - interval '1 second' where user_id = ${user.id}`;
    await settled(user, 2); // our runs, and the one the database started, race for them: one of each wins
    await new Promise((resolve) => setTimeout(resolve, 200)); // a losing run has nothing left to send

    assert.equal(whileClaimed.claimed, 0, "claimed deliveries are left alone");
    assert.equal(hook.received.length, 1);
    assert.equal((await telegramMessages(token)).length, 1);
    assert.deepEqual((await deliveries(user)).map((d) => [d.channel, d.status, d.attempts]), [
      ["telegram", "delivered", 2],
      ["webhook", "delivered", 2],
    ], "each took a second attempt, after the dead run's");
  } finally {
    await hook.close();
    await deleteUser(user);
  }
});

stackTest("notify: a refused chat fails for good without the token in the error; operator alerts go to the operator", async () => {
  const user = await createUser();
  const hook = webhook();
  const token = botToken();
  const subject = `machine-${crypto.randomUUID()}`;
  try {
    await subscribe(user, hook, token);
    await telegramFaults(token, [{ kind: "chat_not_found" }]);
    await sql`insert into public.notifications (user_id, kind, title) values (${user.id}, 'trade_failed', 'Rejected')`;
    await sql`select public.raise_operator_alert('heartbeat_missed', ${subject}, 'no heartbeat for 2 minutes')`;
    await sql`select public.raise_operator_alert('heartbeat_missed', ${subject}, 'still none')`;
    await sql`select public.resolve_operator_alert('heartbeat_missed', ${subject})`;
    await settled(user, 2);
    for (let i = 0; i < 50; i++) {
      const [{ open }] = await sql`
        select count(*)::int as open from public.notification_deliveries d
          join public.operator_alert_events e on e.id = d.alert_event_id
          join public.operator_alerts a on a.id = e.alert_id
         where a.subject = ${subject} and d.status in ('pending', 'delivering')`;
      if (open === 0) break;
      await run();
      await new Promise((resolve) => setTimeout(resolve, 50)); // or the database's run is still sending them
    }

    const [telegram] = await sql`select status::text, last_error from public.notification_deliveries
                                  where user_id = ${user.id} and channel = 'telegram'`;
    assert.equal(telegram.status, "failed");
    assert.match(telegram.last_error, /chat not found/);
    assert.ok(!telegram.last_error.includes(token.split(":")[1]), "the bot token is not in the error");
    const operatorMessages = (await telegramMessages(env("OPERATOR_TELEGRAM_BOT_TOKEN"))).filter((m) => m.text.includes(subject));
    assert.equal(operatorMessages.length, 2, "one message when the alert fired, one when it recovered");
    assert.ok(operatorMessages.every((m) => m.chat_id === env("OPERATOR_TELEGRAM_CHAT_ID")));
    const webhooks = await sql`
      select d.status::text from public.notification_deliveries d join public.operator_alert_events e on e.id = d.alert_event_id
        join public.operator_alerts a on a.id = e.alert_id where a.subject = ${subject} and d.channel = 'webhook'`;
    assert.deepEqual(webhooks.map((row) => row.status), ["skipped", "skipped"], "no operator webhook is configured locally");
  } finally {
    await hook.close();
    await deleteUser(user);
  }
});

stackTest("notify: only service_role may run deliveries; bad bodies are 400", async () => {
  const user = await createUser();
  try {
    const asUser = await handler(post(URL, {}, user.jwt));
    const bad = await handler(post(URL, { maxDeliveries: 0 }, env("SUPABASE_SERVICE_ROLE_KEY")));
    const unknown = await handler(post(URL, { everything: true }, env("SUPABASE_SERVICE_ROLE_KEY")));

    assert.equal(asUser.status, 403);
    assert.equal(bad.status, 400);
    assert.equal(unknown.status, 400);
    for (const response of [asUser, bad, unknown]) await response.body?.cancel();
  } finally {
    await deleteUser(user);
  }
});
