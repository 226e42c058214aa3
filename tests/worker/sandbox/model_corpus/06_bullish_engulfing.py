"""Bullish engulfing candle after a short downtrend (4h)."""


def is_bullish_engulfing(opens, closes):
    prev_open, prev_close = opens[-2], closes[-2]
    cur_open, cur_close = opens[-1], closes[-1]
    prev_bearish = prev_close < prev_open
    cur_bullish = cur_close > cur_open
    engulfs = cur_open <= prev_close and cur_close >= prev_open
    return prev_bearish and cur_bullish and engulfs


def check_signal(symbol, ticker, klines):
    k = klines["4h"]
    opens = get_opens(k)
    closes = get_closes(k)
    if len(closes) < 10:
        return False

    # Three lower closes before the pattern
    downtrend = closes[-5] > closes[-4] > closes[-3] > closes[-2]
    return downtrend and is_bullish_engulfing(opens, closes)
