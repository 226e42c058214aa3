"""Confluence long: RSI between 40 and 60 rising, MACD histogram turning positive, price above VWAP (15m)."""


def check_signal(symbol, ticker, klines):
    k = klines["15m"]
    closes = get_closes(k)
    if len(closes) < 60:
        return False

    rsi = get_latest_rsi(k, 14)
    macd, signal, hist = get_latest_macd(k, 12, 26, 9)
    vwap = get_latest_vwap(k)

    conditions = {
        "rsi_mid": 40 <= rsi <= 60,
        "macd_positive": hist > 0 and macd > signal,
        "above_vwap": closes[-1] > vwap,
        "higher_close": closes[-1] > closes[-2],
    }
    return all(conditions.values())
