"""Mean reversion: enter when the close is more than 2 standard deviations below its 50-period mean."""

WINDOW = 50
Z_ENTRY = -2.0


def zscore(values, window):
    sample = values[-window:]
    std = sample.std()
    if std == 0:
        return 0.0
    return (values[-1] - sample.mean()) / std


def check_signal(symbol, ticker, klines):
    k = klines["30m"]
    closes = get_closes(k)
    if len(closes) < WINDOW:
        return False
    z = zscore(closes, WINDOW)
    adx = get_latest_adx(k, 14)
    # Mean reversion only works when there is no strong trend
    return z < Z_ENTRY and adx < 25
