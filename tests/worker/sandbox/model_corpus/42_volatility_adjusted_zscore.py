"""Z-score of the 1h return against the last 100 returns; buy a -3 sigma flush when the daily trend is up."""

from math import sqrt


def returns(closes):
    return [(b - a) / a for a, b in zip(closes[:-1], closes[1:])]


def mean_std(values):
    m = sum(values) / len(values)
    var = sum((v - m) ** 2 for v in values) / len(values)
    return m, sqrt(var)


def check_signal(symbol, ticker, klines):
    hourly, daily = klines["1h"], klines["1d"]
    closes = get_closes(hourly)[-102:].tolist()
    if len(closes) < 102 or len(get_closes(daily)) < 50:
        return False

    rets = returns(closes)
    history, last = rets[:-1], rets[-1]
    mean, std = mean_std(history)
    if std == 0:
        return False
    z = (last - mean) / std
    daily_trend_up = get_closes(daily)[-1] > get_latest_sma(daily, 50)
    return z < -3 and daily_trend_up
