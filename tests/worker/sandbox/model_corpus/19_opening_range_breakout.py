"""Opening range breakout: the first hour of the UTC day sets a range; buy the 5m close above it."""

MS_PER_DAY = 86_400_000
RANGE_MINUTES = 60


def check_signal(symbol, ticker, klines):
    k = klines["5m"]
    times = k.open_time
    if len(times) < 48:
        return False

    day_start = (int(times[-1]) // MS_PER_DAY) * MS_PER_DAY
    range_end = day_start + RANGE_MINUTES * 60_000
    if int(times[-1]) < range_end:
        return False  # still inside the opening range

    in_range = [i for i in range(len(times)) if day_start <= int(times[i]) < range_end]
    if not in_range:
        return False
    range_high = max(k.high[i] for i in in_range)
    range_low = min(k.low[i] for i in in_range)

    closes = k.close
    broke_out = closes[-2] <= range_high < closes[-1]
    range_pct = (range_high - range_low) / range_low * 100
    return broke_out and range_pct < 2.0
