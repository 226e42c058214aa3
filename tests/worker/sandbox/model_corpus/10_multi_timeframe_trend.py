"""Multi-timeframe trend following: 4h trend up, 1h pullback to the 20 EMA, 15m momentum turning up."""


def trend_is_up(k):
    return get_latest_ema(k, 50) > get_latest_ema(k, 200)


def check_signal(symbol, ticker, klines):
    higher = klines["4h"]
    middle = klines["1h"]
    lower = klines["15m"]
    for k in (higher, middle, lower):
        if len(get_closes(k)) < 210:
            return False

    if not trend_is_up(higher):
        return False

    price = get_closes(middle)[-1]
    ema20 = get_latest_ema(middle, 20)
    near_ema = abs(price - ema20) / ema20 < 0.005

    macd, signal, hist = get_latest_macd(lower)
    momentum_up = hist > 0 and get_latest_rsi(lower, 14) > 50
    return near_ema and momentum_up
