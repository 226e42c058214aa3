"""Bullish RSI divergence: price makes a lower low while RSI makes a higher low (1h)."""

LOOKBACK = 30
PERIOD = 14


def rsi_series(closes, period=14):
    gains, losses = [], []
    for i in range(1, len(closes)):
        change = closes[i] - closes[i - 1]
        gains.append(max(change, 0.0))
        losses.append(max(-change, 0.0))
    if len(gains) < period:
        return []
    avg_gain = sum(gains[:period]) / period
    avg_loss = sum(losses[:period]) / period
    values = []
    for i in range(period, len(gains)):
        avg_gain = (avg_gain * (period - 1) + gains[i]) / period
        avg_loss = (avg_loss * (period - 1) + losses[i]) / period
        if avg_loss == 0:
            values.append(100.0)
        else:
            rs = avg_gain / avg_loss
            values.append(100 - 100 / (1 + rs))
    return values


def check_signal(symbol, ticker, klines):
    k = klines["1h"]
    closes = list(get_closes(k))
    lows = list(get_lows(k))
    if len(closes) < 200:
        return False

    rsi = rsi_series(closes[-200:], PERIOD)
    lows = lows[-len(rsi):]
    if len(rsi) < LOOKBACK:
        return False

    recent_lows = lows[-LOOKBACK:]
    recent_rsi = rsi[-LOOKBACK:]
    half = LOOKBACK // 2
    first_low_idx = min(range(half), key=lambda i: recent_lows[i])
    second_low_idx = min(range(half, LOOKBACK), key=lambda i: recent_lows[i])

    price_lower_low = recent_lows[second_low_idx] < recent_lows[first_low_idx]
    rsi_higher_low = recent_rsi[second_low_idx] > recent_rsi[first_low_idx]
    return price_lower_low and rsi_higher_low and recent_rsi[-1] < 40
