// ask: a signed-in user asks the AI about one of their traders or positions (the console's chat pane). The
// trader's instructions, the position and the recent analyses go along as quoted data (prompt.ts); the call
// spends the user's daily AI token budget, the same one analyze-signal and generate-strategy use.
import { authenticate, isUuid, requireRole } from "../_shared/auth.ts";
import { reserveTokens, settleTokens } from "../_shared/budget.ts";
import { supabaseEnv } from "../_shared/env.ts";
import { estimateTokens, GeminiClient, geminiConfigFromEnv, ModelError } from "../_shared/gemini.ts";
import { HttpError, invalidBody, jsonResponse, postHandler, readJsonObject } from "../_shared/http.ts";
import { serviceClient } from "../_shared/supabase.ts";
import { loadContext } from "./context.ts";
import { buildPrompt, type ChatTurn, GEMINI_ANSWER_SCHEMA, newNonce, SYSTEM_INSTRUCTION, validateAnswer } from "./prompt.ts";

const MAX_BODY_BYTES = 64 * 1024;
const MAX_QUESTION_CHARS = 2000;
const MAX_TURNS = 10;
const MAX_TURN_CHARS = 4000;
const MAX_OUTPUT_TOKENS = 1024;
const FIELDS = ["question", "traderId", "positionId", "conversation"];
// Control characters other than tab and line breaks have no place in a question.
const CONTROL_CHARS = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/;

interface AskRequest {
  question: string;
  traderId: string | null;
  positionId: string | null;
  conversation: ChatTurn[];
}

function parseRequest(body: Record<string, unknown>): AskRequest {
  const unknown = Object.keys(body).filter((key) => !FIELDS.includes(key));
  if (unknown.length) throw invalidBody(`unknown field(s): ${unknown.join(", ")}; expected ${FIELDS.join(", ")}`);
  const { question, traderId, positionId, conversation = [] } = body;
  if (typeof question !== "string" || !question.trim()) throw invalidBody("question is required: a non-empty string");
  const trimmed = question.trim();
  if (trimmed.length > MAX_QUESTION_CHARS) {
    throw invalidBody(`question must be at most ${MAX_QUESTION_CHARS} characters, was ${trimmed.length}`);
  }
  if (CONTROL_CHARS.test(trimmed)) throw invalidBody("question must not contain control characters");
  if (traderId !== undefined && !isUuid(traderId)) throw invalidBody("traderId must be a UUID");
  if (positionId !== undefined && !isUuid(positionId)) throw invalidBody("positionId must be a UUID");
  if (traderId === undefined && positionId === undefined) {
    throw invalidBody("traderId or positionId is required: the question is about one trader or position");
  }
  if (!Array.isArray(conversation) || conversation.length > MAX_TURNS) {
    throw invalidBody(`conversation must be a list of at most ${MAX_TURNS} earlier turns`);
  }
  conversation.forEach((turn, index) => {
    const valid = typeof turn === "object" && turn !== null && ["user", "model"].includes(turn.role) &&
      typeof turn.text === "string" && turn.text.length <= MAX_TURN_CHARS && Object.keys(turn).length === 2;
    if (!valid) {
      throw invalidBody(`conversation[${index}] must be {role: "user" | "model", text: at most ${MAX_TURN_CHARS} characters}`);
    }
  });
  return {
    question: trimmed,
    traderId: (traderId as string | undefined) ?? null,
    positionId: (positionId as string | undefined) ?? null,
    conversation: conversation as ChatTurn[],
  };
}

export const handler = postHandler("ask", async (req) => {
  const env = supabaseEnv();
  const caller = await authenticate(req);
  const request = parseRequest(await readJsonObject(req, MAX_BODY_BYTES));
  requireRole(caller, ["authenticated"], "ask the AI about traders");
  const userId = caller.userId as string;
  const gemini = new GeminiClient(geminiConfigFromEnv());
  const db = serviceClient(env);

  const { traderId, context } = await loadContext(db, { userId, traderId: request.traderId, positionId: request.positionId });
  if (request.conversation.length) context.conversation = request.conversation;
  const prompt = buildPrompt(request.question, context, newNonce());
  const reserved = 2 * (estimateTokens(SYSTEM_INSTRUCTION + prompt) + MAX_OUTPUT_TOKENS) + MAX_OUTPUT_TOKENS;
  const reservation = await reserveTokens(db, userId, reserved);
  let result;
  try {
    result = await gemini.generate({
      systemInstruction: SYSTEM_INSTRUCTION,
      prompt,
      responseSchema: GEMINI_ANSWER_SCHEMA,
      validate: validateAnswer,
      maxOutputTokens: MAX_OUTPUT_TOKENS,
      temperature: 0.3,
    });
  } catch (error) {
    await settleTokens(db, reservation, error instanceof ModelError ? error.usage : { promptTokens: 0, completionTokens: 0 });
    if (error instanceof ModelError) {
      console.error(`ask: model failed user_id=${userId} failure=${error.failure} attempts=${error.attempts}: ${error.message}`);
      throw new HttpError(502, error.failure, `the AI model failed to answer: ${error.message}`);
    }
    throw error;
  }
  await settleTokens(db, reservation, result.usage);
  return jsonResponse({
    success: true,
    answer: result.value.answer,
    traderId,
    positionId: request.positionId,
    usage: { promptTokens: result.usage.promptTokens, completionTokens: result.usage.completionTokens, model: result.model },
  });
});
