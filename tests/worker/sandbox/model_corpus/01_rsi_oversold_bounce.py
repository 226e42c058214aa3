"""RSI oversold bounce on the 1h chart with a 200 EMA trend filter."""

RSI_PERIOD = 14
OVERSOLD = 30
TREND_PERIOD = 200


def check_signal(symbol, ticker, klines):
    k = klines["1h"]
    closes = get_closes(k)
    if len(closes) < TREND_PERIOD + 2:
        return False

    rsi = get_latest_rsi(k, RSI_PERIOD)
    ema_200 = get_latest_ema(k, TREND_PERIOD)
    price = closes[-1]

    # Only buy dips in an uptrend
    if price < ema_200:
        return False

    return rsi < OVERSOLD
