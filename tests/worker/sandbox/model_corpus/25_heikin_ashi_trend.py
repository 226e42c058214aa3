"""Heikin-Ashi: first green HA candle without a lower wick after at least three red ones (2h)."""


def heikin_ashi(opens, highs, lows, closes):
    ha = []
    ha_open = (opens[0] + closes[0]) / 2
    for o, h, l, c in zip(opens, highs, lows, closes):
        ha_close = (o + h + l + c) / 4
        ha_high = max(h, ha_open, ha_close)
        ha_low = min(l, ha_open, ha_close)
        ha.append({"open": ha_open, "high": ha_high, "low": ha_low, "close": ha_close})
        ha_open = (ha_open + ha_close) / 2
    return ha


def check_signal(symbol, ticker, klines):
    k = klines["2h"]
    n = 100
    if len(get_closes(k)) < n:
        return False
    candles = heikin_ashi(get_opens(k)[-n:], get_highs(k)[-n:], get_lows(k)[-n:], get_closes(k)[-n:])
    last = candles[-1]
    green_no_lower_wick = last["close"] > last["open"] and abs(last["low"] - last["open"]) < 1e-9
    previous_red = all(c["close"] < c["open"] for c in candles[-4:-1])
    return green_no_lower_wick and previous_red
