"""Market prices for trading, read from the market feed's stores: last prices, ATR, and analysis data."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, Protocol

from worker.clock import Clock
from worker.domain.trader import Trader
from worker.indicators import series
from worker.market.store import KlineStore
from worker.market.tickers import TickerStore
from worker.signals.market_data import build_market_data


class PriceSource(Protocol):
    def last_price(self, symbol: str) -> Decimal | None:
        """The newest price for `symbol`, or None when there is none."""
        ...

    def atr(self, symbol: str) -> Decimal | None:
        """The latest ATR for trailing stops in ATR mode (None when not available)."""
        ...


class MarketPrices:
    """Prices and ATR for the executor and monitor, and `marketData` for re-analysis."""

    def __init__(
        self,
        tickers: TickerStore,
        klines: KlineStore,
        *,
        atr_interval: str,
        atr_period: int,
        clock: Clock,
    ) -> None:
        self._tickers = tickers
        self._klines = klines
        self._atr_interval = atr_interval
        self._atr_period = atr_period
        self._clock = clock
        self._atr_cache: dict[str, tuple[int, Decimal | None]] = {}  # symbol -> (series version, ATR)

    def last_price(self, symbol: str) -> Decimal | None:
        ticker = self._tickers.get(symbol)
        return ticker.last_price if ticker is not None else None

    def atr(self, symbol: str) -> Decimal | None:
        candles = self._klines.get(symbol, self._atr_interval)
        if candles is None or len(candles) <= self._atr_period:
            return None
        cached = self._atr_cache.get(symbol)
        if cached is not None and cached[0] == candles.version:
            return cached[1]
        view = candles.klines()
        values = series.atr(view.high, view.low, view.close, self._atr_period)
        latest = float(values[-1])
        atr = Decimal(repr(latest)) if math.isfinite(latest) and latest > 0 else None
        self._atr_cache[symbol] = (candles.version, atr)
        return atr

    def market_data(self, trader: Trader, symbol: str) -> tuple[dict[str, Any], Decimal] | None:
        """The `marketData` body for analysing the trader's signal on `symbol`, and the last price."""
        ticker = self._tickers.get(symbol)
        if ticker is None:
            return None
        series_by_timeframe = {}
        for timeframe in trader.timeframes:
            klines = self._klines.klines(symbol, timeframe)
            if klines is not None:
                series_by_timeframe[timeframe] = klines
        if not series_by_timeframe:
            return None
        market_data = build_market_data(symbol, ticker, series_by_timeframe, self._clock.now())
        return market_data, ticker.last_price
