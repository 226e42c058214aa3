"""Williams %R oversold reversal on 30m, guarded against missing data."""

import math


def check_signal(symbol, ticker, klines):
    try:
        k = klines["30m"]
        closes = get_closes(k)
        wr_now = get_latest_williams_r(k, 14)
        prev_close = closes[-2]
    except (KeyError, IndexError):
        return False

    if math.isnan(wr_now):
        return False

    rising = closes[-1] > prev_close
    return wr_now < -80 and rising
