"""Hammer candle at the 50-candle low (1h)."""

BODY_RATIO = 0.35
LOWER_WICK_RATIO = 2.0


def check_signal(symbol, ticker, klines):
    k = klines["1h"]
    o = get_opens(k)
    h = get_highs(k)
    l = get_lows(k)
    c = get_closes(k)
    if len(c) < 51:
        return False

    body = abs(c[-1] - o[-1])
    candle_range = h[-1] - l[-1]
    if candle_range <= 0:
        return False
    lower_wick = min(o[-1], c[-1]) - l[-1]
    upper_wick = h[-1] - max(o[-1], c[-1])

    is_hammer = (
        body / candle_range <= BODY_RATIO
        and lower_wick >= LOWER_WICK_RATIO * body
        and upper_wick <= body
    )
    at_support = l[-1] <= get_lowest_low(k, 50) * 1.002
    return is_hammer and at_support
