"""Trend by linear regression: the slope of the last 50 closes is positive and the fit is tight (4h)."""

N = 50


def regression(values):
    n = len(values)
    xs = range(n)
    mean_x = (n - 1) / 2
    mean_y = sum(values) / n
    sxx = sum((x - mean_x) ** 2 for x in xs)
    sxy = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, values))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    ss_tot = sum((y - mean_y) ** 2 for y in values)
    ss_res = sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, values))
    r2 = 1 - ss_res / ss_tot if ss_tot else 0.0
    return slope, r2


def check_signal(symbol, ticker, klines):
    k = klines["4h"]
    closes = get_closes(k)
    if len(closes) < N:
        return False
    slope, r2 = regression(closes[-N:].tolist())
    slope_pct = slope / closes[-1] * 100
    return slope_pct > 0.05 and r2 > 0.7
