"""Turtle-style 55-candle Donchian breakout on the daily chart."""


def check_signal(symbol, ticker, klines):
    k = klines["1d"]
    highs = get_highs(k)
    closes = get_closes(k)
    if len(closes) < 56:
        return False

    # Highest high of the previous 55 candles, excluding the current one
    prior_high = highs[-56:-1].max()
    atr = get_latest_atr(k, 20)
    if atr <= 0:
        return False

    breakout = closes[-1] > prior_high
    not_extended = (closes[-1] - prior_high) < 0.5 * atr
    return breakout and not_extended
