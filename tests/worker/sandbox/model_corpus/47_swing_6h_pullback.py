"""Swing trade on the 6h chart: price above the 100 EMA, RSI dipped under 40 in the last 3 candles and is now back above 45."""

import math

EMA_PERIOD = 100


def recent_rsi_dip(closes, period=14, lookback=3, level=40):
    """Rough RSI of the series ending `lookback` candles ago, one per candle."""
    dips = []
    for shift in range(1, lookback + 1):
        window = closes[-(period * 4 + shift):-shift]
        deltas = window[1:] - window[:-1]
        gains = deltas.clip(0, None).mean()
        losses = (-deltas).clip(0, None).mean()
        rsi = 100.0 if losses == 0 else 100 - 100 / (1 + gains / losses)
        dips.append(rsi < level)
    return any(dips)


def check_signal(symbol, ticker, klines):
    k = klines["6h"]
    closes = get_closes(k)
    if len(closes) < EMA_PERIOD + 10:
        return False
    ema = get_latest_ema(k, EMA_PERIOD)
    rsi = get_latest_rsi(k, 14)
    if math.isnan(ema) or math.isnan(rsi):
        return False
    return closes[-1] > ema and rsi > 45 and recent_rsi_dip(closes)
