"""Supertrend (10, 3) flips from bearish to bullish on the 1h chart."""

ATR_PERIOD = 10
MULTIPLIER = 3.0


def supertrend_directions(highs, lows, closes, period=ATR_PERIOD, multiplier=MULTIPLIER):
    trs = [highs[0] - lows[0]]
    for i in range(1, len(closes)):
        trs.append(max(highs[i] - lows[i], abs(highs[i] - closes[i - 1]), abs(lows[i] - closes[i - 1])))
    atr = sum(trs[:period]) / period
    final_upper = final_lower = None
    direction = 1
    directions = []
    for i in range(period, len(closes)):
        atr = (atr * (period - 1) + trs[i]) / period
        mid = (highs[i] + lows[i]) / 2
        basic_upper = mid + multiplier * atr
        basic_lower = mid - multiplier * atr
        if final_upper is None:
            final_upper, final_lower = basic_upper, basic_lower
        else:
            final_upper = basic_upper if basic_upper < final_upper or closes[i - 1] > final_upper else final_upper
            final_lower = basic_lower if basic_lower > final_lower or closes[i - 1] < final_lower else final_lower
        if closes[i] > final_upper:
            direction = 1
        elif closes[i] < final_lower:
            direction = -1
        directions.append(direction)
    return directions


def check_signal(symbol, ticker, klines):
    k = klines["1h"]
    closes = get_closes(k)
    if len(closes) < 100:
        return False
    window = 300
    directions = supertrend_directions(
        get_highs(k)[-window:].tolist(), get_lows(k)[-window:].tolist(), closes[-window:].tolist()
    )
    return len(directions) >= 2 and directions[-2] == -1 and directions[-1] == 1
