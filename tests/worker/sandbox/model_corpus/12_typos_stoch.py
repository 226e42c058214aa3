"""Stochastic oversold cross with a trend filtr (1h). Buy wen %K crosses above %D below 20."""

K_PERIOD = 14
D_PERIOD = 3
OVERSOLD_LEVLE = 20


def stochastik_k(highs, lows, closes, period):
    highest = highs[-period:].max()
    lowest = lows[-period:].min()
    if highest == lowest:
        return 50.0
    return 100 * (closes[-1] - lowest) / (highest - lowest)


def check_signal(symbol, ticker, klines):
    candels = klines["1h"]
    closes = get_closes(candels)
    if len(closes) < 100:
        return False

    k_now, d_now = get_latest_stochastic(candels, K_PERIOD, D_PERIOD)
    # previos %K values to build the previos %D
    highs, lows = get_highs(candels), get_lows(candels)
    prev_ks = [stochastik_k(highs[: len(highs) - i], lows[: len(lows) - i], closes[: len(closes) - i], K_PERIOD) for i in range(1, D_PERIOD + 1)]
    k_prev = prev_ks[0]
    d_prev = sum(prev_ks) / len(prev_ks)

    crosed_up = k_prev <= d_prev and k_now > d_now
    trend_ok = closes[-1] > get_latest_ema(candels, 100)
    return crosed_up and k_now < OVERSOLD_LEVLE + 10 and trend_ok
