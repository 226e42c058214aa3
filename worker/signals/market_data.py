"""What a trader's data looks like to signal code (the ticker dict) and to analyze-signal (`marketData`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from worker.indicators import series
from worker.market.klines import Klines
from worker.market.messages import Ticker

# Candles per timeframe sent for analysis (the function accepts up to 1000; the prompt shows the last 30
# and summarises the rest), and the history the indicators are computed over (from the store).
ANALYSIS_KLINES = 200


def signal_ticker(ticker: Ticker) -> dict[str, float]:
    """The `ticker` dict check_signal receives (the contract: lastPrice, volume24h, priceChange24h, ...).

    `priceChange24h` is the 24 h change in percent (as the seed's ticker had it); `priceChangeAbs24h` the
    change in quote currency. Numbers are floats, like the kline arrays.
    """
    return {
        "lastPrice": float(ticker.last_price),
        "volume24h": float(ticker.volume),
        "quoteVolume24h": float(ticker.quote_volume),
        "priceChange24h": float(ticker.price_change_percent),
        "priceChangeAbs24h": float(ticker.price_change),
        "openPrice24h": float(ticker.open_price),
        "highPrice24h": float(ticker.high_price),
        "lowPrice24h": float(ticker.low_price),
        "bidPrice": float(ticker.bid_price),
        "askPrice": float(ticker.ask_price),
    }


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _last(values: series.FloatArray) -> float | None:
    return _number(float(values[-1])) if len(values) else None


def indicators(klines: Klines) -> dict[str, Any]:
    """The latest value of the indicators the analysis prompt shows, for one series (null while warming)."""
    close, high, low = klines.close, klines.high, klines.low
    macd = series.macd(close)
    bands = series.bollinger_bands(close, 20, 2.0)
    return {
        "rsi_14": _last(series.rsi(close, 14)),
        "macd": {"macd": _last(macd.macd), "signal": _last(macd.signal), "histogram": _last(macd.histogram)},
        "ema_20": _last(series.ema(close, 20)),
        "sma_50": _last(series.sma(close, 50)),
        "bollinger_20": {
            "upper": _last(bands.upper),
            "middle": _last(bands.middle),
            "lower": _last(bands.lower),
        },
        "atr_14": _last(series.atr(high, low, close, 14)),
        "volume_sma_20": _last(series.sma(klines.volume, 20)),
    }


def _kline_rows(klines: Klines, count: int) -> list[list[float | int]]:
    """The newest `count` candles in Binance's kline layout [openTime, open, high, low, close, volume]."""
    start = max(0, len(klines) - count)
    return [
        [int(t), float(o), float(h), float(lo), float(c), float(v)]
        for t, o, h, lo, c, v in zip(
            klines.open_time[start:], klines.open[start:], klines.high[start:], klines.low[start:],
            klines.close[start:], klines.volume[start:], strict=True,
        )
    ]  # fmt: skip


def build_market_data(
    symbol: str,
    ticker: Ticker,
    klines_by_timeframe: Mapping[str, Klines],
    now: datetime,
    *,
    klines_per_timeframe: int = ANALYSIS_KLINES,
) -> dict[str, Any]:
    """The `marketData` body analyze-signal validates (see supabase/functions/analyze-signal/market_data.ts).

    Timeframes keep the caller's order (the trader's first timeframe first: the prompt and the model's
    first-indicator reading follow it); indicator names are `<indicator>_<timeframe>`. The arrays are
    read now, so call this before awaiting anything (the store updates them in place).
    """
    klines: dict[str, list[list[float | int]]] = {}
    values: dict[str, Any] = {}
    for timeframe, series_klines in klines_by_timeframe.items():
        if len(series_klines) == 0:
            continue
        klines[timeframe] = _kline_rows(series_klines, klines_per_timeframe)
        for name, value in indicators(series_klines).items():
            values[f"{name}_{timeframe}"] = value
    return {
        "symbol": symbol,
        "timestamp": int(now.timestamp()),
        "ticker": signal_ticker(ticker),
        "klines": klines,
        "indicators": values,
    }
