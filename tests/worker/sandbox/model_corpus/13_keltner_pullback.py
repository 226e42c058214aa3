"""Pullback to the lower Keltner Channel in a strong uptrend (ADX > 25) on the 2h chart."""


def check_signal(symbol: str, ticker: dict, klines: dict) -> bool:
    k = klines["2h"]
    if len(get_closes(k)) < 60:
        return False

    upper, middle, lower = get_latest_keltner_channels(k, 20, 10, 2.0)
    adx = get_latest_adx(k, 14)
    low = get_lows(k)[-1]
    close = get_closes(k)[-1]

    touched_lower = low <= lower
    closed_inside = close > lower
    uptrend = middle > get_latest_ema(k, 50)
    return adx > 25 and uptrend and touched_lower and closed_inside
