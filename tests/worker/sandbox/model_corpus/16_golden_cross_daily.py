"""Classic golden cross: 50-day SMA crosses above the 200-day SMA."""


def sma(values, period):
    return sum(values[-period:]) / period


def check_signal(symbol, ticker, klines):
    daily = klines["1d"]
    closes = get_closes(daily)
    if len(closes) < 201:
        return False

    sma50_now = sma(closes, 50)
    sma200_now = sma(closes, 200)
    sma50_prev = sma(closes[:-1], 50)
    sma200_prev = sma(closes[:-1], 200)
    return sma50_prev <= sma200_prev and sma50_now > sma200_now
