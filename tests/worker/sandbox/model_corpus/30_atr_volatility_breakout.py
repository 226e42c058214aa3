"""Volatility breakout: close moves more than 1.5 ATR above the previous close (1h), ATR expanding."""


def check_signal(symbol, ticker, klines):
    k = klines["1h"]
    closes = get_closes(k)
    if len(closes) < 50:
        return False

    atr_now = get_latest_atr(k, 14)
    move = closes[-1] - closes[-2]
    # average true range of the older half as a reference for expansion
    highs, lows = get_highs(k), get_lows(k)
    old_ranges = (highs[-40:-20] - lows[-40:-20])
    expanding = atr_now > old_ranges.mean()
    return move > 1.5 * atr_now and expanding
