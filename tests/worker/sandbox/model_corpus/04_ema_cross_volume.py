"""EMA 9/21 golden cross on 1h, confirmed by above-average volume."""

FAST = 9
SLOW = 21


def ema(values: list[float], period: int) -> list[float]:
    k = 2.0 / (period + 1)
    out = [values[0]]
    for v in values[1:]:
        out.append(v * k + out[-1] * (1 - k))
    return out


def check_signal(symbol: str, ticker: dict, klines: dict) -> bool:
    data = klines["1h"]
    closes = get_closes(data).tolist()
    if len(closes) < SLOW * 3:
        return False

    fast = ema(closes, FAST)
    slow = ema(closes, SLOW)

    bullish_cross = fast[-2] <= slow[-2] and fast[-1] > slow[-1]
    volume_ok = get_latest_volume(data) > 1.2 * get_latest_volume_ma(data, 20)
    return bullish_cross and volume_ok
