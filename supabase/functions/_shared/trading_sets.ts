// The value sets the database's CHECK constraints enforce (private.is_timeframe_list, is_timer_interval,
// is_symbol_list in migration 20261120220000); a test compares them with Postgres.

export const TIMEFRAMES = ["1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d"] as const;
export type Timeframe = typeof TIMEFRAMES[number];

const CLOCK_INTERVALS = ["1s", "5s", "10s", "15s", "30s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d"];
export const TIMER_INTERVALS: readonly string[] = [...CLOCK_INTERVALS, ...TIMEFRAMES.map((tf) => `${tf}_close`)];

export const SYMBOL_PATTERN = "^[A-Z0-9]{2,20}$";
const SYMBOL = new RegExp(SYMBOL_PATTERN);

export function isTimeframe(value: unknown): value is Timeframe {
  return typeof value === "string" && (TIMEFRAMES as readonly string[]).includes(value);
}

export function isSymbol(value: unknown): value is string {
  return typeof value === "string" && SYMBOL.test(value);
}

/** Milliseconds per timeframe, for checking kline spacing. */
export const TIMEFRAME_MS: Record<Timeframe, number> = {
  "1m": 60_000, "3m": 180_000, "5m": 300_000, "15m": 900_000, "30m": 1_800_000, "1h": 3_600_000,
  "2h": 7_200_000, "4h": 14_400_000, "6h": 21_600_000, "8h": 28_800_000, "12h": 43_200_000, "1d": 86_400_000,
};
