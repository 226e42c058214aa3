"""Aroon up crosses above Aroon down with Aroon up above 70 (1h)."""

PERIOD = 25


def aroon(highs, lows, period):
    window_h = list(highs[-(period + 1):])
    window_l = list(lows[-(period + 1):])
    since_high = period - window_h.index(max(window_h))
    since_low = period - window_l.index(min(window_l))
    return 100 * (period - since_high) / period, 100 * (period - since_low) / period


def check_signal(symbol, ticker, klines):
    k = klines["1h"]
    highs, lows = get_highs(k), get_lows(k)
    if len(highs) < PERIOD + 2:
        return False

    up_now, down_now = get_latest_aroon(k, PERIOD)
    up_prev, down_prev = aroon(highs[:-1], lows[:-1], PERIOD)
    return up_prev <= down_prev and up_now > down_now and up_now >= 70
