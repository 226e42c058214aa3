"""Bounce off yesterday's classic pivot S1 on the 15m chart."""

MS_PER_DAY = 86_400_000


def daily_pivots(k):
    """Pivot, S1 and R1 from the previous UTC day's 15m candles."""
    times = k.open_time
    today = int(times[-1]) // MS_PER_DAY
    idx = [i for i, t in enumerate(times) if int(t) // MS_PER_DAY == today - 1]
    if len(idx) < 10:
        raise ValueError("not enough candles from yesterday")
    high = max(k.high[i] for i in idx)
    low = min(k.low[i] for i in idx)
    close = k.close[idx[-1]]
    pivot = (high + low + close) / 3
    return pivot, 2 * pivot - high, 2 * pivot - low


def check_signal(symbol, ticker, klines):
    k = klines["15m"]
    pivot, s1, r1 = daily_pivots(k)
    low, close = k.low[-1], k.close[-1]
    touched = low <= s1 * 1.001
    bounced = close > s1 and close > k.open[-1]
    return touched and bounced
