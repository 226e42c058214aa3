"""Breakout and retest: price broke the 48-candle high in the last 12 candles and pulled back to it (1h)."""


def check_signal(symbol, ticker, klines):
    k = klines["1h"]
    highs, lows, closes = get_highs(k), get_lows(k), get_closes(k)
    if len(closes) < 70:
        return False

    resistance = highs[-60:-12].max()
    broke = any(c > resistance for c in closes[-12:-1])
    retest = lows[-1] <= resistance * 1.003 and closes[-1] > resistance
    return broke and retest
