"""Inside bar breakout on the daily chart: today's close breaks above the mother bar's high."""


def check_signal(symbol, ticker, klines):
    d = klines["1d"]
    highs, lows, closes = get_highs(d), get_lows(d), get_closes(d)
    if len(closes) < 5:
        return False

    mother_high, mother_low = highs[-3], lows[-3]
    inside = highs[-2] < mother_high and lows[-2] > mother_low
    breakout = closes[-1] > mother_high
    return inside and breakout
