"""Bollinger Band squeeze followed by a close above the upper band (15m)."""

PERIOD = 20
STD_DEV = 2.0
SQUEEZE_LOOKBACK = 100


def band_width(closes, period=PERIOD, std_dev=STD_DEV):
    window = closes[-period:]
    mean = window.mean()
    if mean == 0:
        return 0.0
    return (2 * std_dev * window.std()) / mean


def check_signal(symbol, ticker, klines):
    k = klines["15m"]
    closes = get_closes(k)
    if len(closes) < SQUEEZE_LOOKBACK + PERIOD:
        return False

    widths = [band_width(closes[: len(closes) - i]) for i in range(1, SQUEEZE_LOOKBACK)]
    current_width = band_width(closes[:-1])
    was_squeezed = current_width <= min(widths) * 1.1

    upper, _, _ = get_latest_bollinger_bands(k, PERIOD, STD_DEV)
    return was_squeezed and closes[-1] > upper
