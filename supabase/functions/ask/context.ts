// What the model is told about the trader's question: the trader (strategy, instructions, risk), the position
// asked about or the trader's open positions, and the most recent analyses. Read with the service role, so
// every query is filtered by the caller's user id; another user's rows are reported as not found.
import type { SupabaseClient } from "npm:@supabase/supabase-js@2.119.0";
import { HttpError } from "../_shared/http.ts";

const ANALYSES = 5;
const OPEN_POSITIONS = 5;
const REASONING_CHARS = 600;
const POSITION_COLUMNS = "id, signal_id, symbol, side, type, status, entry_price, size, stop_loss, take_profit, " +
  "trailing_stop_percent, realized_pnl, fees_paid, pnl, pnl_percent, opened_at, closed_at, close_reason";

export interface AskTarget {
  userId: string;
  traderId: string | null;
  positionId: string | null;
}

function check<T>(result: { data: T; error: { message: string } | null }, what: string): T {
  if (result.error) throw new Error(`reading ${what} failed: ${result.error.message}`);
  return result.data;
}

// deno-lint-ignore no-explicit-any
type Row = Record<string, any>;

function positionView(row: Row, signal: Row | null): Row {
  return {
    id: row.id,
    symbol: row.symbol,
    side: row.side,
    mode: row.type,
    status: row.status,
    entryPrice: row.entry_price,
    size: row.size,
    stopLoss: row.stop_loss,
    takeProfit: row.take_profit,
    trailingStopPercent: row.trailing_stop_percent,
    lastSeenPrice: signal?.current_price ?? null,
    realizedPnl: row.realized_pnl,
    feesPaid: row.fees_paid,
    closedPnl: row.pnl,
    closedPnlPercent: row.pnl_percent,
    openedAt: row.opened_at,
    closedAt: row.closed_at,
    closeReason: row.close_reason,
  };
}

/** The context document for the prompt; 404 when the trader or position is not the caller's. */
export async function loadContext(db: SupabaseClient, target: AskTarget): Promise<{ traderId: string; context: Row }> {
  let traderId = target.traderId;
  let position: Row | null = null;
  let signalId: string | null = null;
  if (target.positionId) {
    const row = check(
      await db.from("positions").select(POSITION_COLUMNS).eq("id", target.positionId).eq("user_id", target.userId)
        .maybeSingle(),
      "positions",
    ) as Row | null;
    if (!row) throw new HttpError(404, "position_not_found", `position ${target.positionId} not found`);
    const signal = check(
      await db.from("signals").select("trader_id, current_price, trigger_price, status").eq("id", row.signal_id)
        .eq("user_id", target.userId).single(),
      "signals",
    ) as Row;
    if (traderId && traderId !== signal.trader_id) {
      throw new HttpError(400, "invalid_body", `position ${row.id} belongs to trader ${signal.trader_id}, not ${traderId}`);
    }
    traderId = signal.trader_id as string;
    signalId = row.signal_id as string;
    position = positionView(row, signal);
  }
  const trader = check(
    await db.from("traders")
      .select("id, name, description, status, error_message, ai_instructions, symbols, timeframes, check_interval, " +
        "reanalysis_interval, risk")
      .eq("id", traderId).eq("user_id", target.userId).maybeSingle(),
    "traders",
  ) as Row | null;
  if (!trader) throw new HttpError(404, "trader_not_found", `trader ${traderId} not found`);

  let analyses = db.from("analysis_history")
    .select("timestamp, decision, confidence, reasoning, metadata, signal_id, signals(symbol)")
    .eq("user_id", target.userId).eq("trader_id", trader.id)
    .order("timestamp", { ascending: false }).limit(ANALYSES);
  if (signalId) analyses = analyses.eq("signal_id", signalId);
  const recent = (check(await analyses, "analysis_history") as Row[]).map((row) => ({
    at: row.timestamp,
    symbol: row.signals?.symbol ?? null,
    decision: row.decision,
    confidence: row.confidence,
    reasoning: String(row.reasoning).slice(0, REASONING_CHARS),
    levels: row.metadata ?? {},
  }));

  const context: Row = {
    trader: {
      id: trader.id,
      name: trader.name,
      status: trader.status,
      errorMessage: trader.error_message,
      description: trader.description,
      instructions: trader.ai_instructions,
      symbols: trader.symbols ?? "the default universe",
      timeframes: trader.timeframes,
      checkInterval: trader.check_interval,
      reanalysisInterval: trader.reanalysis_interval,
      risk: trader.risk,
    },
    recentAnalyses: recent,
  };
  if (position) {
    context.position = position;
  } else {
    const open = check(
      await db.from("positions").select(`${POSITION_COLUMNS}, signals!inner(trader_id, current_price)`)
        .eq("user_id", target.userId).eq("status", "open").eq("signals.trader_id", trader.id)
        .order("opened_at", { ascending: false }).limit(OPEN_POSITIONS),
      "positions",
    ) as Row[];
    context.openPositions = open.map((row) => positionView(row, row.signals));
  }
  return { traderId: trader.id, context };
}
