"""London-session breakout: between 07:00 and 10:00 UTC, a 5m close above the Asian-session high."""

ASIA_START_HOUR = 0
ASIA_END_HOUR = 7
LONDON_END_HOUR = 10


def hour_of(ms):
    return (int(ms) // 3_600_000) % 24


def check_signal(symbol, ticker, klines):
    k = klines["5m"]
    times, highs, closes = k.open_time, k.high, k.close
    if len(times) < 300:
        return False

    now_hour = hour_of(times[-1])
    if not ASIA_END_HOUR <= now_hour < LONDON_END_HOUR:
        return False

    day = int(times[-1]) // 86_400_000
    asia_highs = [
        h for t, h in zip(times, highs)
        if int(t) // 86_400_000 == day and ASIA_START_HOUR <= hour_of(t) < ASIA_END_HOUR
    ]
    if not asia_highs:
        return False
    asia_high = max(asia_highs)
    return closes[-2] <= asia_high < closes[-1]
