"""OBV makes a new 30-candle high while price does not (accumulation), 4h chart."""


def obv_series(closes, volumes):
    obv = [0.0]
    for i in range(1, len(closes)):
        if closes[i] > closes[i - 1]:
            obv.append(obv[-1] + volumes[i])
        elif closes[i] < closes[i - 1]:
            obv.append(obv[-1] - volumes[i])
        else:
            obv.append(obv[-1])
    return obv


def check_signal(symbol, ticker, klines):
    k = klines["4h"]
    closes = get_closes(k)[-120:]
    volumes = get_volumes(k)[-120:]
    if len(closes) < 60:
        return False

    obv = obv_series(closes, volumes)
    lookback = 30
    obv_new_high = obv[-1] >= max(obv[-lookback:])
    price_high = closes[-lookback:].max()
    price_lagging = closes[-1] < price_high * 0.98
    return obv_new_high and price_lagging
