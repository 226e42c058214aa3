"""Per-symbol RSI thresholds: tighter for BTC, looser for altcoins (1h)."""

THRESHOLDS = {
    "BTCUSDT": {"oversold": 32, "period": 14},
    "ETHUSDT": {"oversold": 30, "period": 14},
}
DEFAULT = {"oversold": 28, "period": 10}


def settings_for(symbol, table=THRESHOLDS, fallback=DEFAULT):
    return table.get(symbol, fallback)


def check_signal(symbol, ticker, klines):
    config = settings_for(symbol)
    k = klines["1h"]
    if len(get_closes(k)) < config["period"] * 3:
        return False
    rsi = get_latest_rsi(k, config["period"])
    return isinstance(rsi, float) and rsi < config["oversold"]
