"""Double bottom: two similar lows 10-40 candles apart and a close above the neckline (1h)."""

TOLERANCE = 0.01


def local_minima(lows, width=3):
    found = []
    for i in range(width, len(lows) - width):
        window = lows[i - width:i + width + 1]
        if lows[i] == min(window):
            found.append(i)
    return found


def check_signal(symbol, ticker, klines):
    k = klines["1h"]
    lows = get_lows(k)[-80:].tolist()
    highs = get_highs(k)[-80:].tolist()
    closes = get_closes(k)[-80:].tolist()
    if len(lows) < 80:
        return False

    minima = local_minima(lows)
    for a, b in zip(minima, minima[1:]):
        if not 10 <= b - a <= 40:
            continue
        if abs(lows[a] - lows[b]) / lows[a] > TOLERANCE:
            continue
        neckline = max(highs[a:b + 1])
        if closes[-2] <= neckline < closes[-1]:
            return True
    return False
