"""Buy when the price crosses one of several round-number levels from below (1h)."""


def round_levels(price, step):
    base = (price // step) * step
    return [base - step, base, base + step]


def check_signal(symbol, ticker, klines):
    k = klines["1h"]
    closes = get_closes(k)
    if len(closes) < 3:
        return False

    price = ticker["lastPrice"]
    step = 1000 if price > 10_000 else (100 if price > 1000 else 10)
    for level in round_levels(price, step):
        if closes[-2] < level <= closes[-1]:
            return True
    return False
