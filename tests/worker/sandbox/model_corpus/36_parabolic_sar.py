"""Parabolic SAR flips below price (bullish) on the 30m chart."""


def parabolic_sar(highs, lows, step=0.02, max_step=0.2):
    bullish = True
    af = step
    ep = highs[0]
    sar = lows[0]
    trend = []
    for i in range(1, len(highs)):
        sar = sar + af * (ep - sar)
        if bullish:
            sar = min(sar, lows[i - 1], lows[i - 2] if i > 1 else lows[i - 1])
            if lows[i] < sar:
                bullish, sar, ep, af = False, ep, lows[i], step
            elif highs[i] > ep:
                ep, af = highs[i], min(af + step, max_step)
        else:
            sar = max(sar, highs[i - 1], highs[i - 2] if i > 1 else highs[i - 1])
            if highs[i] > sar:
                bullish, sar, ep, af = True, ep, highs[i], step
            elif lows[i] < ep:
                ep, af = lows[i], min(af + step, max_step)
        trend.append(bullish)
    return trend


def check_signal(symbol, ticker, klines):
    k = klines["30m"]
    highs = get_highs(k)[-200:].tolist()
    lows = get_lows(k)[-200:].tolist()
    if len(highs) < 50:
        return False
    trend = parabolic_sar(highs, lows)
    return not trend[-2] and trend[-1]
