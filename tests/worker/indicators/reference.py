"""Plain-Python, loop-by-loop implementations of the textbook definitions, to check the vectorised ones."""

from __future__ import annotations

import math
import statistics

NAN = math.nan


def sma(x: list[float], n: int) -> list[float]:
    return [NAN if i < n - 1 else sum(x[i - n + 1 : i + 1]) / n for i in range(len(x))]


def ema(x: list[float], n: int, alpha: float | None = None) -> list[float]:
    alpha = 2 / (n + 1) if alpha is None else alpha
    out = [NAN] * len(x)
    start = next((i for i, v in enumerate(x) if not math.isnan(v)), len(x))
    if len(x) - start < n:
        return out
    value = sum(x[start : start + n]) / n
    out[start + n - 1] = value
    for i in range(start + n, len(x)):
        value = alpha * x[i] + (1 - alpha) * value
        out[i] = value
    return out


def rsi(close: list[float], n: int) -> list[float]:
    out = [NAN] * len(close)
    if len(close) <= n:
        return out
    gains = [max(close[i] - close[i - 1], 0.0) for i in range(1, len(close))]
    losses = [max(close[i - 1] - close[i], 0.0) for i in range(1, len(close))]
    average_gain, average_loss = sum(gains[:n]) / n, sum(losses[:n]) / n
    for i in range(n, len(close)):
        if i > n:
            average_gain = (average_gain * (n - 1) + gains[i - 1]) / n
            average_loss = (average_loss * (n - 1) + losses[i - 1]) / n
        if average_loss == 0:
            out[i] = 50.0 if average_gain == 0 else 100.0
        else:
            out[i] = 100 - 100 / (1 + average_gain / average_loss)
    return out


def true_range(high: list[float], low: list[float], close: list[float]) -> list[float]:
    return [NAN] + [
        max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
        for i in range(1, len(close))
    ]


def wilder(x: list[float], n: int, start: int) -> list[float]:
    """Wilder's average of x[start:], first value (an SMA) at start + n - 1."""
    out = [NAN] * len(x)
    if len(x) - start < n:
        return out
    value = sum(x[start : start + n]) / n
    out[start + n - 1] = value
    for i in range(start + n, len(x)):
        value = (value * (n - 1) + x[i]) / n
        out[i] = value
    return out


def atr(high: list[float], low: list[float], close: list[float], n: int) -> list[float]:
    return wilder(true_range(high, low, close), n, 1)


def adx(high: list[float], low: list[float], close: list[float], n: int) -> list[float]:
    plus_dm, minus_dm = [0.0], [0.0]
    for i in range(1, len(high)):
        up, down = high[i] - high[i - 1], low[i - 1] - low[i]
        plus_dm.append(up if up > down and up > 0 else 0.0)
        minus_dm.append(down if down > up and down > 0 else 0.0)
    tr = wilder(true_range(high, low, close), n, 1)
    plus, minus = wilder(plus_dm, n, 1), wilder(minus_dm, n, 1)
    dx = [NAN] * len(high)
    for i in range(n, len(high)):
        plus_di, minus_di = 100 * plus[i] / tr[i], 100 * minus[i] / tr[i]
        total = plus_di + minus_di
        dx[i] = 0.0 if total == 0 else 100 * abs(plus_di - minus_di) / total
    return wilder(dx, n, n)


def stdev(x: list[float], n: int) -> list[float]:
    return [NAN if i < n - 1 else statistics.pstdev(x[i - n + 1 : i + 1]) for i in range(len(x))]


def cci(high: list[float], low: list[float], close: list[float], n: int) -> list[float]:
    tp = [(h + lo + c) / 3 for h, lo, c in zip(high, low, close, strict=True)]
    out = [NAN] * len(tp)
    for i in range(n - 1, len(tp)):
        window = tp[i - n + 1 : i + 1]
        mean = sum(window) / n
        deviation = sum(abs(v - mean) for v in window) / n
        out[i] = 0.0 if deviation == 0 else (tp[i] - mean) / (0.015 * deviation)
    return out


def aroon(high: list[float], low: list[float], n: int) -> tuple[list[float], list[float]]:
    up, down = [NAN] * len(high), [NAN] * len(high)
    for i in range(n, len(high)):
        window_high, window_low = high[i - n : i + 1], low[i - n : i + 1]
        since_high = n - max(j for j, v in enumerate(window_high) if v == max(window_high))
        since_low = n - max(j for j, v in enumerate(window_low) if v == min(window_low))
        up[i], down[i] = 100 * (n - since_high) / n, 100 * (n - since_low) / n
    return up, down


def obv(close: list[float], volume: list[float]) -> list[float]:
    out = [volume[0]]
    for i in range(1, len(close)):
        sign = int(close[i] > close[i - 1]) - int(close[i] < close[i - 1])
        out.append(out[-1] + sign * volume[i])
    return out
