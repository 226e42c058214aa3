"""Position trade: 12h Donchian midline breakout, confirmed by the 8h MACD above zero."""


def check_signal(symbol, ticker, klines):
    slow = klines["12h"]
    confirm = klines["8h"]
    if len(get_closes(slow)) < 60 or len(get_closes(confirm)) < 60:
        return False

    upper, middle, lower = get_latest_donchian_channels(slow, 40)
    closes = get_closes(slow)
    crossed_mid = closes[-2] < middle <= closes[-1]

    macd_line, signal_line, histogram = get_latest_macd(confirm)
    width_pct = (upper - lower) / middle * 100 if middle else 0
    return crossed_mid and macd_line > 0 and histogram > 0 and width_pct > 3
