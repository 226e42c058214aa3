"""Morning star reversal on the 4h chart after a decline."""


def body(o, c):
    return abs(c - o)


def check_signal(symbol, ticker, klines):
    k = klines["4h"]
    o, c = get_opens(k), get_closes(k)
    if len(c) < 15:
        return False

    first_bearish = c[-3] < o[-3] and body(o[-3], c[-3]) > 0
    small_middle = body(o[-2], c[-2]) < 0.3 * body(o[-3], c[-3])
    third_bullish = c[-1] > o[-1]
    closes_into_first = c[-1] > (o[-3] + c[-3]) / 2
    declined = c[-4] < c[-10]
    return first_bearish and small_middle and third_bullish and closes_into_first and declined
