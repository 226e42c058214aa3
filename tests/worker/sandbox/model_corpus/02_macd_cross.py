"""MACD line crossing above its signal line on the 4h chart."""


def ema_series(values, period):
    """EMA of a list of floats, seeded with the SMA of the first `period` values."""
    if len(values) < period:
        return []
    alpha = 2 / (period + 1)
    ema = sum(values[:period]) / period
    result = [ema]
    for value in values[period:]:
        ema = alpha * value + (1 - alpha) * ema
        result.append(ema)
    return result


def check_signal(symbol: str, ticker: dict, klines: dict) -> bool:
    k = klines["4h"]
    closes = list(get_closes(k))
    if len(closes) < 60:
        return False

    fast = ema_series(closes, 12)
    slow = ema_series(closes, 26)
    # Align the two series on their last values
    offset = len(fast) - len(slow)
    macd_line = [f - s for f, s in zip(fast[offset:], slow)]
    signal_line = ema_series(macd_line, 9)
    if len(signal_line) < 2:
        return False

    macd_now, macd_prev = macd_line[-1], macd_line[-2]
    signal_now, signal_prev = signal_line[-1], signal_line[-2]
    crossed_up = macd_prev <= signal_prev and macd_now > signal_now
    return crossed_up and macd_now < 0
