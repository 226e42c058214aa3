"""Scalper on 3m: buy a pullback in an uptrend only when the ticker spread and 24h volume look healthy."""

MIN_QUOTE_VOLUME = 1_000_000


def safe_ratio(a, b, default=0.0):
    try:
        return a / b
    except ZeroDivisionError:
        return default


def check_signal(symbol, ticker, klines):
    k = klines["3m"]
    closes = get_closes(k)
    if len(closes) < 60:
        return False

    bid = ticker.get("bidPrice") or ticker["lastPrice"]
    ask = ticker.get("askPrice") or ticker["lastPrice"]
    spread_pct = safe_ratio(ask - bid, ticker["lastPrice"]) * 100
    if spread_pct > 0.05 or ticker.get("quoteVolume24h", 0) < MIN_QUOTE_VOLUME:
        return False

    uptrend = get_latest_ema(k, 20) > get_latest_ema(k, 50)
    pulled_back = get_latest_rsi(k, 7) < 35
    return uptrend and pulled_back
