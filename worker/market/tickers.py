"""The latest 24 h ticker per symbol, as the feed last heard it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from worker.market.messages import Ticker

logger = logging.getLogger(__name__)

TickerListener = Callable[[Ticker], None]


class TickerStore:
    """Symbol -> newest `Ticker` (an older event never replaces a newer one)."""

    def __init__(self) -> None:
        self._tickers: dict[str, Ticker] = {}
        self._listeners: list[TickerListener] = []

    def add_listener(self, listener: TickerListener) -> None:
        """Call `listener(ticker)` after each stored update (synchronously: keep it cheap; errors logged)."""
        self._listeners.append(listener)

    def remove_listener(self, listener: TickerListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def update(self, ticker: Ticker) -> None:
        current = self._tickers.get(ticker.symbol)
        if current is None or ticker.event_time_ms >= current.event_time_ms:
            self._tickers[ticker.symbol] = ticker
            for listener in self._listeners:
                try:
                    listener(ticker)
                except Exception:  # a listener's bug must not stop the feed
                    logger.exception("ticker listener failed symbol=%s", ticker.symbol)

    def get(self, symbol: str) -> Ticker | None:
        return self._tickers.get(symbol)

    def drop(self, symbol: str) -> None:
        self._tickers.pop(symbol, None)

    def all(self) -> dict[str, Ticker]:
        return dict(self._tickers)
