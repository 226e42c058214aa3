"""Ichimoku: price closes above the cloud and Tenkan-sen crosses above Kijun-sen (4h)."""

TENKAN = 9
KIJUN = 26
SENKOU_B = 52


def midpoint(highs, lows, period, end=None):
    if end is None:
        end = len(highs)
    return (highs[end - period:end].max() + lows[end - period:end].min()) / 2


def check_signal(symbol, ticker, klines):
    k = klines["4h"]
    highs, lows, closes = get_highs(k), get_lows(k), get_closes(k)
    n = len(closes)
    if n < SENKOU_B + KIJUN + 2:
        return False

    tenkan_now = midpoint(highs, lows, TENKAN)
    kijun_now = midpoint(highs, lows, KIJUN)
    tenkan_prev = midpoint(highs, lows, TENKAN, n - 1)
    kijun_prev = midpoint(highs, lows, KIJUN, n - 1)

    # The cloud plotted at the current candle was computed KIJUN candles ago
    span_a = (midpoint(highs, lows, TENKAN, n - KIJUN) + midpoint(highs, lows, KIJUN, n - KIJUN)) / 2
    span_b = midpoint(highs, lows, SENKOU_B, n - KIJUN)
    cloud_top = max(span_a, span_b)

    tk_cross = tenkan_prev <= kijun_prev and tenkan_now > kijun_now
    return tk_cross and closes[-1] > cloud_top
