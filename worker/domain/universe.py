"""Which symbols and series a trader needs: its own list or the default universe, and the feed streams."""

from __future__ import annotations

from collections.abc import Iterable

from worker.domain.intervals import parse_interval
from worker.domain.trader import Trader

KlineKey = tuple[str, str]  # (symbol, interval)


def trader_symbols(trader: Trader, default: tuple[str, ...]) -> tuple[str, ...]:
    """The symbols the trader checks, in order: its list, or `default` when it has none."""
    return trader.symbols if trader.symbols is not None else default


def trader_timeframes(trader: Trader) -> tuple[str, ...]:
    """The kline series the trader needs per symbol: its timeframes plus the `<tf>_close` one, if any."""
    timeframes = list(trader.timeframes)
    for text in (trader.check_interval, trader.reanalysis_interval):
        timeframe = parse_interval(text).timeframe
        if timeframe is not None and timeframe not in timeframes:
            timeframes.append(timeframe)
    return tuple(timeframes)


def subscriptions(traders: Iterable[Trader], default: tuple[str, ...]) -> tuple[set[KlineKey], set[str]]:
    """Every (symbol, timeframe) series and every ticker the given traders need."""
    klines: set[KlineKey] = set()
    tickers: set[str] = set()
    for trader in traders:
        symbols = trader_symbols(trader, default)
        tickers.update(symbols)
        klines.update((symbol, timeframe) for symbol in symbols for timeframe in trader_timeframes(trader))
    return klines, tickers
