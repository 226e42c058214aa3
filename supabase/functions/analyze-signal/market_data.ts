// The market data the worker sends with a signal: validated field by field (Binance kline layout), then
// compacted for the prompt within a character budget (recent candles, a summary per timeframe, indicators).
import { invalidBody } from "../_shared/http.ts";
import { isSymbol, isTimeframe, TIMEFRAME_MS, type Timeframe } from "../_shared/trading_sets.ts";

export const MAX_TIMEFRAMES = 8;
export const MAX_KLINES_PER_TIMEFRAME = 1000;
export const MAX_INDICATORS = 64;
const MAX_TICKER_FIELDS = 20;
const MAX_INDICATOR_PARTS = 16;
const INDICATOR_NAME = /^[A-Za-z0-9_.-]{1,64}$/;
// Unix seconds between 2017 (Binance's first candles) and 2100; kline open times in milliseconds likewise,
// so every time is a valid Date when the prompt formats it.
const MIN_TIMESTAMP_SECS = 1_483_228_800;
const MAX_TIMESTAMP_SECS = 4_102_444_800;
const MIN_OPEN_TIME_MS = MIN_TIMESTAMP_SECS * 1000;
const MAX_OPEN_TIME_MS = MAX_TIMESTAMP_SECS * 1000;
// Larger than any price, volume or indicator a market has; sums of a thousand stay finite.
const MAX_MAGNITUDE = 1e18;

export interface Kline {
  openTime: number;
  open: number;
  high: number;
  low: number;
  close: number;
  volume: number;
}

export type IndicatorValue = number | null | (number | null)[] | Record<string, number | null>;

export interface MarketData {
  symbol: string;
  timestampSecs: number;
  ticker: Record<string, number> & { lastPrice: number };
  klines: Partial<Record<Timeframe, Kline[]>>;
  indicators: Record<string, IndicatorValue>;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A Binance decimal (string, as Binance sends it, or number) as a finite number. */
function decimal(value: unknown, field: string, sign: "positive" | "nonnegative" | "any" = "nonnegative"): number {
  const parsed = typeof value === "string" && /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(value)
    ? Number(value)
    : typeof value === "number"
    ? value
    : NaN;
  if (!Number.isFinite(parsed)) throw invalidBody(`${field} must be a decimal number or numeric string, was ${JSON.stringify(value)}`);
  if (Math.abs(parsed) > MAX_MAGNITUDE) throw invalidBody(`${field} must be at most ${MAX_MAGNITUDE.toExponential()} in size, was ${parsed}`);
  if ((sign === "positive" && parsed <= 0) || (sign === "nonnegative" && parsed < 0)) {
    throw invalidBody(`${field} must be ${sign === "positive" ? "greater than 0" : "0 or more"}, was ${parsed}`);
  }
  return parsed;
}

function parseKlines(timeframe: Timeframe, rows: unknown): Kline[] {
  const field = `marketData.klines.${timeframe}`;
  if (!Array.isArray(rows) || rows.length === 0) throw invalidBody(`${field} must be a non-empty array of klines`);
  if (rows.length > MAX_KLINES_PER_TIMEFRAME) {
    throw invalidBody(`${field} has ${rows.length} klines; at most ${MAX_KLINES_PER_TIMEFRAME} are accepted`);
  }
  const step = TIMEFRAME_MS[timeframe];
  let previous = -Infinity;
  return rows.map((row, index) => {
    const at = `${field}[${index}]`;
    if (!Array.isArray(row) || row.length < 6 || row.length > 12) {
      throw invalidBody(`${at} must be a Binance kline array [openTime, open, high, low, close, volume, ...] of 6-12 items`);
    }
    const openTime = row[0];
    if (!Number.isSafeInteger(openTime) || openTime < MIN_OPEN_TIME_MS || openTime > MAX_OPEN_TIME_MS) {
      throw invalidBody(`${at}[0] (openTime) must be Unix milliseconds between 2017 and 2100`);
    }
    if (openTime <= previous) throw invalidBody(`${at}[0] (openTime) must be later than the kline before it`);
    if (openTime % step !== 0) throw invalidBody(`${at}[0] (openTime) is not aligned to ${timeframe}`);
    previous = openTime;
    const kline = {
      openTime,
      open: decimal(row[1], `${at}[1] (open)`, "positive"),
      high: decimal(row[2], `${at}[2] (high)`, "positive"),
      low: decimal(row[3], `${at}[3] (low)`, "positive"),
      close: decimal(row[4], `${at}[4] (close)`, "positive"),
      volume: decimal(row[5], `${at}[5] (volume)`),
    };
    if (kline.high < Math.max(kline.open, kline.close, kline.low) || kline.low > Math.min(kline.open, kline.close)) {
      throw invalidBody(`${at}: high must be the highest and low the lowest of open, high, low and close`);
    }
    return kline;
  });
}

function parseIndicator(name: string, value: unknown): IndicatorValue {
  const field = `marketData.indicators.${name}`;
  const finite = (item: unknown, at: string): number | null => {
    if (item === null) return null;
    if (typeof item !== "number" || !Number.isFinite(item) || Math.abs(item) > MAX_MAGNITUDE) {
      throw invalidBody(`${at} must be a finite number (at most ${MAX_MAGNITUDE.toExponential()} in size) or null`);
    }
    return item;
  };
  if (value === null || typeof value === "number") return finite(value, field);
  if (Array.isArray(value)) {
    if (value.length > MAX_INDICATOR_PARTS) throw invalidBody(`${field} may hold at most ${MAX_INDICATOR_PARTS} values`);
    return value.map((item, index) => finite(item, `${field}[${index}]`));
  }
  if (isPlainObject(value)) {
    const entries = Object.entries(value);
    if (entries.length > MAX_INDICATOR_PARTS) throw invalidBody(`${field} may hold at most ${MAX_INDICATOR_PARTS} values`);
    return Object.fromEntries(entries.map(([key, item]) => [key, finite(item, `${field}.${key}`)]));
  }
  throw invalidBody(`${field} must be a number, null, an array of numbers or an object of numbers`);
}

export function parseMarketData(raw: unknown): MarketData {
  if (!isPlainObject(raw)) throw invalidBody("marketData is required and must be an object");
  if (!isSymbol(raw.symbol)) throw invalidBody("marketData.symbol must be a Binance symbol such as BTCUSDT");
  const timestamp = raw.timestamp;
  if (!Number.isSafeInteger(timestamp) || (timestamp as number) < MIN_TIMESTAMP_SECS || (timestamp as number) > MAX_TIMESTAMP_SECS) {
    throw invalidBody("marketData.timestamp must be Unix seconds (an integer between 2017 and 2100)");
  }
  if (!isPlainObject(raw.ticker)) throw invalidBody("marketData.ticker must be an object with lastPrice");
  const tickerEntries = Object.entries(raw.ticker);
  if (tickerEntries.length > MAX_TICKER_FIELDS) throw invalidBody(`marketData.ticker may hold at most ${MAX_TICKER_FIELDS} fields`);
  if (raw.ticker.lastPrice === undefined) throw invalidBody("marketData.ticker.lastPrice is required");
  const ticker: Record<string, number> = {};
  for (const [key, value] of tickerEntries) {
    if (!INDICATOR_NAME.test(key)) throw invalidBody(`marketData.ticker has an invalid field name ${JSON.stringify(key)}`);
    // priceChange fields may be negative; every other ticker field is a price or a volume.
    const signed = /change/i.test(key);
    ticker[key] = decimal(
      value,
      `marketData.ticker.${key}`,
      signed ? "any" : key === "lastPrice" ? "positive" : "nonnegative",
    );
  }
  if (!isPlainObject(raw.klines)) throw invalidBody("marketData.klines must be an object of timeframe -> kline arrays");
  const timeframes = Object.keys(raw.klines);
  if (timeframes.length === 0 || timeframes.length > MAX_TIMEFRAMES) {
    throw invalidBody(`marketData.klines must hold 1-${MAX_TIMEFRAMES} timeframes, held ${timeframes.length}`);
  }
  const klines: Partial<Record<Timeframe, Kline[]>> = {};
  for (const timeframe of timeframes) {
    if (!isTimeframe(timeframe)) throw invalidBody(`marketData.klines has an unknown timeframe ${JSON.stringify(timeframe)}`);
    klines[timeframe] = parseKlines(timeframe, raw.klines[timeframe]);
  }
  const indicators: Record<string, IndicatorValue> = {};
  if (raw.indicators !== undefined) {
    if (!isPlainObject(raw.indicators)) throw invalidBody("marketData.indicators must be an object");
    const entries = Object.entries(raw.indicators);
    if (entries.length > MAX_INDICATORS) throw invalidBody(`marketData.indicators may hold at most ${MAX_INDICATORS} values`);
    for (const [name, value] of entries) {
      if (!INDICATOR_NAME.test(name)) throw invalidBody(`marketData.indicators has an invalid name ${JSON.stringify(name)}`);
      indicators[name] = parseIndicator(name, value);
    }
  }
  return {
    symbol: raw.symbol as string,
    timestampSecs: timestamp as number,
    ticker: ticker as MarketData["ticker"],
    klines,
    indicators,
  };
}

/** Up to 8 significant digits, no exponent for ordinary prices. */
export function formatNumber(value: number): string {
  if (value === 0) return "0";
  return Number(value.toPrecision(8)).toString();
}

function isoMinute(ms: number): string {
  return new Date(ms).toISOString().slice(0, 16).replace("T", " ");
}

function candleSection(timeframe: Timeframe, klines: Kline[], recent: number): string {
  const shown = klines.slice(-recent);
  const first = klines[0];
  const last = klines[klines.length - 1];
  const high = Math.max(...klines.map((k) => k.high));
  const low = Math.min(...klines.map((k) => k.low));
  const averageVolume = klines.reduce((sum, k) => sum + k.volume, 0) / klines.length;
  const changePercent = ((last.close - first.open) / first.open) * 100;
  return [
    `### ${timeframe}: ${klines.length} candles from ${isoMinute(first.openTime)} UTC; change ${changePercent.toFixed(2)}%, ` +
    `high ${formatNumber(high)}, low ${formatNumber(low)}, average volume ${formatNumber(averageVolume)}`,
    `last ${shown.length} (open time UTC, open, high, low, close, volume):`,
    ...shown.map((k) =>
      [isoMinute(k.openTime), k.open, k.high, k.low, k.close, k.volume].map((v) => typeof v === "number" ? formatNumber(v) : v).join(" ")
    ),
  ].join("\n");
}

/**
 * The candles part of the prompt: as many recent candles per timeframe as fit `budgetChars` (at most
 * `maxRecent`, at least `minRecent`), each timeframe with a summary of everything sent.
 */
export function compactCandles(market: MarketData, budgetChars: number, maxRecent = 30, minRecent = 5): string {
  const timeframes = Object.keys(market.klines) as Timeframe[];
  let recent = maxRecent;
  for (;;) {
    const text = timeframes.map((tf) => candleSection(tf, market.klines[tf] as Kline[], recent)).join("\n\n");
    if (text.length <= budgetChars || recent <= minRecent) return text;
    recent = Math.max(minRecent, Math.floor(recent * 0.7));
  }
}

/** What analysis_history keeps of the market: everything but the full candle arrays (last candle only). */
export function marketSnapshot(market: MarketData): Record<string, unknown> {
  return {
    symbol: market.symbol,
    timestamp: market.timestampSecs,
    ticker: market.ticker,
    indicators: market.indicators,
    lastCandles: Object.fromEntries(
      Object.entries(market.klines).map(([tf, klines]) => [tf, { count: klines!.length, last: klines![klines!.length - 1] }]),
    ),
  };
}
