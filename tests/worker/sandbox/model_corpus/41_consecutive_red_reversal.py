"""After 5 consecutive red 15m candles, buy the first green candle that closes above the previous high."""

MIN_RED = 5


def count_red_before_last(opens, closes):
    count = 0
    for o, c in reversed(list(zip(opens[:-1], closes[:-1]))):
        if c < o:
            count += 1
        else:
            break
    return count


def check_signal(symbol, ticker, klines):
    k = klines["15m"]
    opens, highs, closes = get_opens(k)[-30:], get_highs(k)[-30:], get_closes(k)[-30:]
    if len(closes) < 30:
        raise ValueError(f"need 30 candles, have {len(closes)}")
    reds = count_red_before_last(opens, closes)
    green = closes[-1] > opens[-1]
    return reds >= MIN_RED and green and closes[-1] > highs[-2]
