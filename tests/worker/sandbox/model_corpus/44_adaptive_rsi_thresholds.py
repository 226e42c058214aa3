"""Adaptive RSI: the oversold threshold is the 10th percentile of the last 200 RSI values (1h)."""

from typing import List


def rsi_values(closes: List[float], period: int = 14) -> List[float]:
    values = []
    avg_gain = avg_loss = 0.0
    for i in range(1, len(closes)):
        change = closes[i] - closes[i - 1]
        gain, loss = max(change, 0), max(-change, 0)
        if i <= period:
            avg_gain += gain / period
            avg_loss += loss / period
            if i < period:
                continue
        else:
            avg_gain = (avg_gain * (period - 1) + gain) / period
            avg_loss = (avg_loss * (period - 1) + loss) / period
        values.append(100.0 if avg_loss == 0 else 100 - 100 / (1 + avg_gain / avg_loss))
    return values


def percentile(values: List[float], pct: float) -> float:
    ordered = sorted(values)
    index = int(round(pct / 100 * (len(ordered) - 1)))
    return ordered[index]


def check_signal(symbol: str, ticker: dict, klines: dict) -> bool:
    k = klines["1h"]
    closes = get_closes(k).tolist()
    if len(closes) < 250:
        return False
    rsi = rsi_values(closes[-300:])
    threshold = percentile(rsi[-200:], 10)
    return rsi[-1] <= threshold and rsi[-1] > rsi[-2]
