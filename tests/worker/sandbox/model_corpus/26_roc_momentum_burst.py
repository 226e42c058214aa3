"""Momentum burst: 10-period rate of change above 3 % on 15m while the 4h RSI is not overbought."""

from typing import Dict


def check_signal(symbol: str, ticker: Dict[str, float], klines: dict) -> bool:
    k15 = klines["15m"]
    k4h = klines["4h"]
    if len(get_closes(k15)) < 30 or len(get_closes(k4h)) < 30:
        return False

    roc = get_latest_roc(k15, 10)
    higher_rsi = get_latest_rsi(k4h, 14)
    change_24h = ticker.get("priceChange24h", 0.0)
    return roc > 3.0 and higher_rsi < 70 and change_24h < 15
