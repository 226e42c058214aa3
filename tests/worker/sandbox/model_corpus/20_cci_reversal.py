"""CCI crosses back above -100 from below while the 1h trend is up."""


def cci(highs, lows, closes, period=20):
    typical = [(h + l + c) / 3 for h, l, c in zip(highs[-period:], lows[-period:], closes[-period:])]
    mean = sum(typical) / period
    mean_dev = sum(abs(t - mean) for t in typical) / period
    if mean_dev == 0:
        return 0.0
    return (typical[-1] - mean) / (0.015 * mean_dev)


def check_signal(symbol, ticker, klines):
    fast = klines["15m"]
    slow = klines["1h"]
    if len(get_closes(fast)) < 40 or len(get_closes(slow)) < 60:
        return False

    highs, lows, closes = get_highs(fast), get_lows(fast), get_closes(fast)
    cci_now = get_latest_cci(fast, 20)
    cci_prev = cci(highs[:-1], lows[:-1], closes[:-1], 20)

    trend_up = get_closes(slow)[-1] > get_latest_sma(slow, 50)
    return trend_up and cci_prev < -100 <= cci_now
