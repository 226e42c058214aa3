// Sending one claimed delivery: to a webhook (POST JSON, Idempotency-Key = the notification id) or to Telegram's
// Bot API (sendMessage). Each answer is classified as delivered, retry (with the receiver's delay when it gave
// one) or failed (the receiver refused it for good); a missing target is skipped.

export interface ClaimedDelivery {
  delivery_id: string;
  channel: "webhook" | "telegram";
  attempts: number;
  source: "notification" | "operator_alert";
  source_id: string;
  user_id: string | null;
  kind: string;
  title: string;
  body: string;
  data: Record<string, unknown>;
  created_at: string;
  webhook_url: string | null;
  telegram_chat_id: string | null;
  telegram_bot_token: string | null;
}

export interface Targets {
  telegramApiUrl: string;
  timeoutMs: number;
  /** The operator's channels, for operator alerts. */
  operatorWebhookUrl: string | null;
  operatorTelegram: { botToken: string; chatId: string } | null;
}

export type Outcome =
  | { outcome: "delivered"; providerMessageId: string | null }
  | { outcome: "retry"; error: string; retryAfterSecs: number | null }
  | { outcome: "failed" | "skipped"; error: string };

const TELEGRAM_MAX_CHARS = 4096;

/** Error text with any bot token taken out (fetch errors can quote the URL, which holds it). */
export function redact(text: string): string {
  return text.replace(/bot[0-9]+:[A-Za-z0-9_-]+/g, "bot<redacted>");
}

function retryAfterSecs(header: string | null): number | null {
  if (!header) return null;
  const secs = Number(header);
  if (Number.isFinite(secs) && secs >= 0) return Math.min(3600, Math.ceil(secs));
  const at = Date.parse(header);
  return Number.isNaN(at) ? null : Math.min(3600, Math.max(0, Math.ceil((at - Date.now()) / 1000)));
}

async function post(url: string, body: unknown, headers: Record<string, string>, timeoutMs: number) {
  return await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
}

function transportFailure(error: unknown): Outcome {
  const reason = (error as Error).name === "TimeoutError" ? "timed out" : redact((error as Error).message);
  return { outcome: "retry", error: reason, retryAfterSecs: null };
}

export function webhookPayload(delivery: ClaimedDelivery): Record<string, unknown> {
  return {
    id: delivery.source_id,
    type: delivery.source,
    kind: delivery.kind,
    title: delivery.title,
    body: delivery.body,
    data: delivery.data,
    userId: delivery.user_id,
    createdAt: delivery.created_at,
  };
}

async function sendWebhook(delivery: ClaimedDelivery, url: string, targets: Targets): Promise<Outcome> {
  let response: Response;
  try {
    response = await post(url, webhookPayload(delivery), {
      "idempotency-key": delivery.source_id,
      "user-agent": "TradeMind-Notify/1",
    }, targets.timeoutMs);
  } catch (error) {
    return transportFailure(error);
  }
  await response.body?.cancel();
  if (response.ok) return { outcome: "delivered", providerMessageId: null };
  const error = `webhook answered HTTP ${response.status}`;
  // 408 and 429 and 5xx are worth another try; any other 4xx is the receiver refusing this request.
  if (response.status === 408 || response.status === 429 || response.status >= 500) {
    return { outcome: "retry", error, retryAfterSecs: retryAfterSecs(response.headers.get("retry-after")) };
  }
  return { outcome: "failed", error };
}

export function telegramText(delivery: ClaimedDelivery): string {
  const text = delivery.body ? `${delivery.title}\n${delivery.body}` : delivery.title;
  return text.length > TELEGRAM_MAX_CHARS ? `${text.slice(0, TELEGRAM_MAX_CHARS - 1)}…` : text;
}

async function sendTelegram(delivery: ClaimedDelivery, botToken: string, chatId: string, targets: Targets): Promise<Outcome> {
  let response: Response;
  try {
    response = await post(`${targets.telegramApiUrl}/bot${botToken}/sendMessage`, {
      chat_id: chatId,
      text: telegramText(delivery),
      disable_web_page_preview: true,
    }, {}, targets.timeoutMs);
  } catch (error) {
    return transportFailure(error);
  }
  const text = await response.text();
  let answer: { ok?: boolean; result?: { message_id?: number }; description?: string; parameters?: { retry_after?: number } } = {};
  try {
    answer = JSON.parse(text);
  } catch { /* a proxy's error page: judged by status below */ }
  if (response.ok && answer.ok) {
    return { outcome: "delivered", providerMessageId: answer.result?.message_id?.toString() ?? null };
  }
  const error = `telegram answered HTTP ${response.status}: ${redact(answer.description ?? text.slice(0, 200))}`;
  if (response.status === 429) {
    return { outcome: "retry", error, retryAfterSecs: answer.parameters?.retry_after ?? retryAfterSecs(response.headers.get("retry-after")) };
  }
  if (response.status >= 500) return { outcome: "retry", error, retryAfterSecs: null };
  // 400 chat not found, 401 bad token, 403 blocked by the user: another try cannot succeed.
  return { outcome: "failed", error };
}

export function send(delivery: ClaimedDelivery, targets: Targets): Promise<Outcome> {
  const forOperator = delivery.source === "operator_alert";
  if (delivery.channel === "webhook") {
    const url = forOperator ? targets.operatorWebhookUrl : delivery.webhook_url;
    if (!url) return Promise.resolve({ outcome: "skipped", error: "no webhook configured" });
    return sendWebhook(delivery, url, targets);
  }
  const telegram = forOperator
    ? targets.operatorTelegram
    : delivery.telegram_bot_token && delivery.telegram_chat_id
    ? { botToken: delivery.telegram_bot_token, chatId: delivery.telegram_chat_id }
    : null;
  if (!telegram) return Promise.resolve({ outcome: "skipped", error: "no Telegram bot configured" });
  return sendTelegram(delivery, telegram.botToken, telegram.chatId, targets);
}
