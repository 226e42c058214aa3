"""Volume spike (3x average) with a strong green candle on the 5m chart."""

SPIKE_MULTIPLIER = 3.0


def check_signal(symbol, ticker, klines):
    k = klines["5m"]
    volumes = get_volumes(k)
    if len(volumes) < 50:
        return False

    avg_volume = volumes[-21:-1].mean()
    if avg_volume == 0:
        return False
    spike = volumes[-1] > SPIKE_MULTIPLIER * avg_volume

    opens, closes = get_opens(k), get_closes(k)
    green = closes[-1] > opens[-1]
    body_pct = (closes[-1] - opens[-1]) / opens[-1] * 100
    return spike and green and body_pct > 0.3
