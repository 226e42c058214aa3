"""Three white soldiers on the 1h chart: three long green candles, each closing near its high."""


def check_signal(symbol, ticker, klines):
    k = klines["1h"]
    opens, highs, lows, closes = get_opens(k), get_highs(k), get_lows(k), get_closes(k)
    if len(closes) < 20:
        return False

    atr = get_latest_atr(k, 14)
    for i in (-3, -2, -1):
        body = closes[i] - opens[i]
        if body <= 0.6 * atr:
            return False
        upper_wick = highs[i] - closes[i]
        if upper_wick > 0.25 * body:
            return False
    # Each opens inside the previous body and closes higher
    for prev, cur in ((-3, -2), (-2, -1)):
        if not (opens[prev] < opens[cur] < closes[prev] and closes[cur] > closes[prev]):
            return False
    return True
