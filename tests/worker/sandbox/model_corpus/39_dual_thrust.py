"""Dual Thrust breakout (1h): range from the last 4 days of 1h candles, k = 0.5."""

K = 0.5
LOOKBACK_HOURS = 96


def check_signal(symbol, ticker, klines):
    hourly = klines["1h"]
    n = len(get_closes(hourly))
    if n < LOOKBACK_HOURS + 24:
        return False

    highs = get_highs(hourly)[-(LOOKBACK_HOURS + 24):-24]
    lows = get_lows(hourly)[-(LOOKBACK_HOURS + 24):-24]
    closes = get_closes(hourly)[-(LOOKBACK_HOURS + 24):-24]
    hh, lc = highs.max(), closes.min()
    hc, ll = closes.max(), lows.min()
    rng = max(hh - lc, hc - ll)

    today_open = get_opens(hourly)[-24]
    upper_trigger = today_open + K * rng
    price = get_closes(hourly)[-1]
    return price > upper_trigger
