"""Strong relative momentum: the 7-day return beats the 30-day average weekly return by 2 points (1d)."""


def weekly_returns(closes):
    returns = []
    for end in range(len(closes) - 1, 7, -7):
        start = end - 7
        returns.append((closes[end] - closes[start]) / closes[start] * 100)
    return returns


def check_signal(symbol, ticker, klines):
    k = klines["1d"]
    closes = get_closes(k)
    if len(closes) < 40:
        return False
    returns = weekly_returns(closes[-36:])
    if len(returns) < 4:
        return False
    this_week, *earlier = returns
    average = sum(earlier) / len(earlier)
    return this_week > average + 2 and get_latest_rsi(k, 14) < 75
