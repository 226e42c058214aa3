// The functions' allowed timeframes and intervals are exactly what the database's CHECK functions accept.
import assert from "node:assert/strict";
import { TIMEFRAMES, TIMER_INTERVALS } from "../_shared/trading_sets.ts";
import { sql, stackTest } from "./helpers.ts";

stackTest("trading sets: timeframes and timer intervals match the database", async () => {
  const candidates = [...new Set([...TIMEFRAMES, ...TIMER_INTERVALS, "1w", "2m", "8h_open", "45m", "1d_close"])];
  for (const value of candidates) {
    const [row] = await sql`select private.is_timeframe_list(${[value]}::text[]) as timeframe,
                                   private.is_timer_interval(${value}) as interval`;
    assert.equal(row.timeframe, (TIMEFRAMES as readonly string[]).includes(value), `timeframe ${value}`);
    assert.equal(row.interval, TIMER_INTERVALS.includes(value), `interval ${value}`);
  }
});
