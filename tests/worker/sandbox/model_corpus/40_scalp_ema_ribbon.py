"""Scalping: EMA ribbon (8, 13, 21, 34) stacked bullish on the 1m chart and price pulls back to EMA 8."""

RIBBON = [8, 13, 21, 34]


def check_signal(symbol, ticker, klines):
    k = klines["1m"]
    if len(get_closes(k)) < 100:
        return False

    emas = [get_latest_ema(k, p) for p in RIBBON]
    stacked = all(a > b for a, b in zip(emas, emas[1:]))
    price = get_closes(k)[-1]
    low = get_lows(k)[-1]
    pullback = low <= emas[0] < price
    return stacked and pullback
