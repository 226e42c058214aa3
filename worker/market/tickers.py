"""The latest 24 h ticker per symbol, as the feed last heard it."""

from __future__ import annotations

from worker.market.messages import Ticker


class TickerStore:
    """Symbol -> newest `Ticker` (an older event never replaces a newer one)."""

    def __init__(self) -> None:
        self._tickers: dict[str, Ticker] = {}

    def update(self, ticker: Ticker) -> None:
        current = self._tickers.get(ticker.symbol)
        if current is None or ticker.event_time_ms >= current.event_time_ms:
            self._tickers[ticker.symbol] = ticker

    def get(self, symbol: str) -> Ticker | None:
        return self._tickers.get(symbol)

    def drop(self, symbol: str) -> None:
        self._tickers.pop(symbol, None)
