"""Money Flow Index below 20 and turning up (1h)."""

PERIOD = 14


def money_flow_index(highs, lows, closes, volumes, period=PERIOD):
    typical = (highs + lows + closes) / 3
    flows = typical * volumes
    positive = negative = 0.0
    for i in range(len(typical) - period, len(typical)):
        if typical[i] > typical[i - 1]:
            positive += flows[i]
        elif typical[i] < typical[i - 1]:
            negative += flows[i]
    if negative == 0:
        return 100.0
    ratio = positive / negative
    return 100 - 100 / (1 + ratio)


def check_signal(symbol, ticker, klines):
    k = klines["1h"]
    h, l, c, v = get_highs(k), get_lows(k), get_closes(k), get_volumes(k)
    if len(c) < PERIOD + 3:
        return False
    mfi_now = money_flow_index(h, l, c, v)
    mfi_prev = money_flow_index(h[:-1], l[:-1], c[:-1], v[:-1])
    return mfi_prev < 20 and mfi_now > mfi_prev
