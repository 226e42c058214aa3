"""Price reclaims the daily VWAP on the 5 minute chart with rising volume."""


def check_signal(symbol, ticker, klines):
    k = klines["5m"]
    closes = get_closes(k)
    if len(closes) < 30:
        return False

    vwap = get_latest_vwap(k)
    prev_close, last_close = closes[-2], closes[-1]
    reclaimed = prev_close < vwap <= last_close

    volume_change = get_latest_volume_change(k, 20)
    return reclaimed and volume_change > 50
