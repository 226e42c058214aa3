"""The replayed market at any instant: intra-candle price path, forming and closed klines, 24h tickers.

Each recorded candle is walked open -> low -> high -> close when it closes up (open -> high -> low -> close
when it closes down), in three legs of equal time, so prices, partial candles, stops and fills move the way
a real candle could have traded; prices on a leg are rounded to the symbol's tick. Between recordings (real
outages) nothing trades and no kline forms. The exchange simulator serves this market, and backtests step
through it (worker/backtest), so both trade the same path.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from worker.domain.intervals import INTERVAL_MS
from worker.market.recordings import Candles, SymbolData, format_price, format_units

DAY_MS = 86_400_000
# Synthesised fields the recordings lack: one trade per 0.1 base unit, half the volume taker-bought.
_UNITS_PER_TRADE = 10_000_000


@dataclass(frozen=True, slots=True)
class Kline:
    """One candle as Binance reports it (prices as floats here; formatted at the edge)."""

    open_time: int
    close_time: int
    open: float
    high: float
    low: float
    close: float
    volume_units: int
    closed: bool

    @property
    def trades(self) -> int:
        return 0 if self.volume_units == 0 else 1 + self.volume_units // _UNITS_PER_TRADE

    @property
    def quote_volume(self) -> float:
        return self.volume_units / 1e8 * (self.open + self.high + self.low + self.close) / 4

    def rest_row(self) -> list[object]:
        """The `GET /api/v3/klines` row."""
        quote = self.quote_volume
        return [
            self.open_time,
            format_price(self.open),
            format_price(self.high),
            format_price(self.low),
            format_price(self.close),
            format_units(self.volume_units),
            self.close_time,
            f"{quote:.8f}",
            self.trades,
            format_units(self.volume_units // 2),
            f"{quote / 2:.8f}",
            "0",
        ]

    def stream_payload(self, symbol: str, interval: str, event_time_ms: int) -> dict[str, object]:
        """The `<symbol>@kline_<interval>` event."""
        quote = self.quote_volume
        first_trade = self.open_time // 1000
        return {
            "e": "kline",
            "E": event_time_ms,
            "s": symbol,
            "k": {
                "t": self.open_time,
                "T": self.close_time,
                "s": symbol,
                "i": interval,
                "f": first_trade if self.trades else -1,
                "L": first_trade + self.trades - 1 if self.trades else -1,
                "o": format_price(self.open),
                "c": format_price(self.close),
                "h": format_price(self.high),
                "l": format_price(self.low),
                "v": format_units(self.volume_units),
                "n": self.trades,
                "x": self.closed,
                "q": f"{quote:.8f}",
                "V": format_units(self.volume_units // 2),
                "Q": f"{quote / 2:.8f}",
                "B": "0",
            },
        }


def _path_vertices(open_: float, high: float, low: float, close: float) -> tuple[float, float, float, float]:
    if close >= open_:
        return open_, low, high, close
    return open_, high, low, close


class SymbolMarket:
    """One symbol's replay: prices and candles at any market time `t_ms`."""

    def __init__(self, data: SymbolData, price_decimals: int = 2) -> None:
        self.symbol = data.symbol
        self.data = data
        self.tape = data.tape
        self.price_decimals = price_decimals
        self._tape_end = self.tape.open_time + self.tape.interval_ms
        self.series = cache(self._series)

    def _series(self, interval_ms: int) -> Candles:
        return self.data.series(interval_ms)

    @property
    def first_ms(self) -> int:
        return int(self.tape.open_time[0])

    @property
    def end_ms(self) -> int:
        return self.tape.end_ms

    # The tape row trading at t_ms, or the last one before it ------------------------------------------
    def _row_at(self, t_ms: int) -> int:
        return int(np.searchsorted(self.tape.open_time, t_ms, side="right")) - 1

    def _partial(self, row: int, t_ms: int) -> tuple[float, float, float, int]:
        """(price, high so far, low so far, volume units so far) of tape row `row` at t_ms."""
        tape = self.tape
        vertices = _path_vertices(
            float(tape.open[row]), float(tape.high[row]), float(tape.low[row]), float(tape.close[row])
        )
        fraction = (t_ms - int(tape.open_time[row])) / int(tape.interval_ms[row])
        if fraction >= 1.0:
            return vertices[3], float(tape.high[row]), float(tape.low[row]), int(tape.volume_units[row])
        position = max(0.0, fraction) * 3
        leg = min(int(position), 2)
        start, end = vertices[leg], vertices[leg + 1]
        price = round(start + (end - start) * (position - leg), self.price_decimals)
        visited = (*vertices[: leg + 1], price)
        volume = int(int(tape.volume_units[row]) * fraction)
        return price, max(visited), min(visited), volume

    def price_at(self, t_ms: int) -> float | None:
        """The last traded price at t_ms (None before the recording starts)."""
        row = self._row_at(t_ms)
        if row < 0:
            return None
        if t_ms >= self._tape_end[row]:
            return float(self.tape.close[row])
        return self._partial(row, t_ms)[0]

    def price_range(self, from_ms: int, to_ms: int) -> tuple[float, float] | None:
        """(lowest, highest) price the path touched in [from_ms, to_ms] (None before the recording)."""
        first, last = self._row_at(from_ms), self._row_at(to_ms)
        if last < 0 or to_ms < from_ms:
            return None
        points = [p for p in (self.price_at(from_ms), self.price_at(to_ms)) if p is not None]
        for row in {max(first, 0), last}:
            points += _path_points(self, row, from_ms, to_ms)
        if last - max(first, 0) >= 2:
            inner = slice(max(first, 0) + 1, last)
            points += [float(self.tape.high[inner].max()), float(self.tape.low[inner].min())]
        return min(points), max(points)

    # Candles ---------------------------------------------------------------------------------------
    def candle_at(self, interval_ms: int, t_ms: int) -> Kline | None:
        """The candle of `interval_ms` containing t_ms as it stands at t_ms (None if nothing traded yet)."""
        bucket = t_ms // interval_ms * interval_ms
        tape = self.tape
        first = int(np.searchsorted(tape.open_time, bucket, side="left"))
        last = self._row_at(t_ms)
        if last < first:
            return None
        rows = slice(first, last + 1)
        if (tape.interval_ms[rows] > interval_ms).any():
            return None  # only coarser recordings here: this interval does not exist for this period
        complete = last if t_ms < self._tape_end[last] else last + 1
        highs = [float(tape.high[first:complete].max(initial=-np.inf))]
        lows = [float(tape.low[first:complete].min(initial=np.inf))]
        volume = int(tape.volume_units[first:complete].sum())
        close = float(tape.close[last])
        if complete == last:
            close, high, low, partial_volume = self._partial(last, t_ms)
            highs.append(high)
            lows.append(low)
            volume += partial_volume
        closed = t_ms >= bucket + interval_ms
        return Kline(
            bucket,
            bucket + interval_ms - 1,
            float(tape.open[first]),
            max(highs),
            min(lows),
            close,
            volume,
            closed,
        )

    def closed_klines(self, interval_ms: int, from_open_ms: int, to_open_ms: int) -> list[Kline]:
        """Recorded candles with from_open_ms <= open time < to_open_ms (all closed)."""
        series = self.series(interval_ms)
        lo = int(np.searchsorted(series.open_time, from_open_ms, side="left"))
        hi = int(np.searchsorted(series.open_time, to_open_ms, side="left"))
        return [_kline(series, index, closed=True) for index in range(lo, hi)]

    def klines(
        self,
        interval_ms: int,
        t_ms: int,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 500,
    ) -> list[Kline]:
        """`GET /api/v3/klines` at market time t_ms: closed candles plus the forming one, nothing later."""
        current = t_ms // interval_ms * interval_ms
        series = self.series(interval_ms)
        upper = current if end_ms is None else min(current, end_ms + 1)
        hi = int(np.searchsorted(series.open_time, upper, side="left"))
        lo = 0 if start_ms is None else int(np.searchsorted(series.open_time, start_ms, side="left"))
        forming = None
        if end_ms is None or end_ms >= current:
            forming = self.candle_at(interval_ms, t_ms)
            if forming is not None and start_ms is not None and forming.open_time < start_ms:
                forming = None
        total = max(0, hi - lo) + (forming is not None)
        if start_ms is None and total > limit:
            lo = hi - (limit - (forming is not None)) if limit > (forming is not None) else hi
            lo = max(lo, 0)
        rows = [_kline(series, index, closed=True) for index in range(lo, hi)]
        if forming is not None:
            rows.append(forming)
        return rows[:limit] if start_ms is not None else rows[-limit:]

    def ticker(self, t_ms: int) -> dict[str, object] | None:
        """The rolling 24h statistics (FULL `ticker/24hr` fields) at t_ms."""
        last = self._row_at(t_ms)
        if last < 0:
            return None
        tape = self.tape
        window_start = t_ms - DAY_MS
        first = int(np.searchsorted(tape.open_time, window_start, side="left"))
        first = min(first, last)
        complete = last if t_ms < self._tape_end[last] else last + 1
        rows = slice(first, complete)
        highs = [float(tape.high[rows].max(initial=-np.inf))]
        lows = [float(tape.low[rows].min(initial=np.inf))]
        volume = int(tape.volume_units[rows].sum())
        typical = (tape.open[rows] + tape.high[rows] + tape.low[rows] + tape.close[rows]) / 4
        quote = float((tape.volume_units[rows] / 1e8 * typical).sum())
        price = float(tape.close[last])
        if complete == last:
            price, high, low, partial_volume = self._partial(last, t_ms)
            highs.append(high)
            lows.append(low)
            volume += partial_volume
            quote += partial_volume / 1e8 * price
        open_price = float(tape.open[first])
        previous_close = float(tape.close[first - 1]) if first > 0 else open_price
        trades = 0 if volume == 0 else 1 + volume // _UNITS_PER_TRADE
        tick = 10.0**-self.price_decimals
        volume_text = format_units(volume)
        return {
            "symbol": self.symbol,
            "priceChange": format_price(price - open_price),
            "priceChangePercent": f"{(price - open_price) / open_price * 100:.3f}",
            "weightedAvgPrice": format_price(quote / (volume / 1e8) if volume else price),
            "prevClosePrice": format_price(previous_close),
            "lastPrice": format_price(price),
            "lastQty": "0.00100000",
            "bidPrice": format_price(price - tick),
            "bidQty": "1.00000000",
            "askPrice": format_price(price + tick),
            "askQty": "1.00000000",
            "openPrice": format_price(open_price),
            "highPrice": format_price(max(highs)),
            "lowPrice": format_price(min(lows)),
            "volume": volume_text,
            "quoteVolume": f"{quote:.8f}",
            "openTime": max(window_start, int(tape.open_time[first])),
            "closeTime": t_ms,
            "firstId": window_start // 1000,
            "lastId": window_start // 1000 + trades - 1,
            "count": trades,
        }


def ticker_event(ticker: dict[str, object], now_ms: int) -> dict[str, object]:
    """The `<symbol>@ticker` stream event for a `ticker(t)` answer."""
    return {
        "e": "24hrTicker",
        "E": now_ms,
        "s": ticker["symbol"],
        "p": ticker["priceChange"],
        "P": ticker["priceChangePercent"],
        "w": ticker["weightedAvgPrice"],
        "x": ticker["prevClosePrice"],
        "c": ticker["lastPrice"],
        "Q": ticker["lastQty"],
        "b": ticker["bidPrice"],
        "B": ticker["bidQty"],
        "a": ticker["askPrice"],
        "A": ticker["askQty"],
        "o": ticker["openPrice"],
        "h": ticker["highPrice"],
        "l": ticker["lowPrice"],
        "v": ticker["volume"],
        "q": ticker["quoteVolume"],
        "O": ticker["openTime"],
        "C": ticker["closeTime"],
        "F": ticker["firstId"],
        "L": ticker["lastId"],
        "n": ticker["count"],
    }


def _kline(series: Candles, index: int, *, closed: bool) -> Kline:
    open_time = int(series.open_time[index])
    return Kline(
        open_time,
        open_time + int(series.interval_ms[index]) - 1,
        float(series.open[index]),
        float(series.high[index]),
        float(series.low[index]),
        float(series.close[index]),
        int(series.volume_units[index]),
        closed,
    )


def _path_points(market: SymbolMarket, row: int, from_ms: int, to_ms: int) -> list[float]:
    """Prices at from_ms, to_ms and every path vertex of tape row `row` in between."""
    tape = market.tape
    open_ms, length = int(tape.open_time[row]), int(tape.interval_ms[row])
    vertices = _path_vertices(
        float(tape.open[row]), float(tape.high[row]), float(tape.low[row]), float(tape.close[row])
    )
    points = []
    for index, vertex in enumerate(vertices):
        at_ms = open_ms + length * index // 3
        if from_ms <= at_ms <= to_ms:
            points.append(vertex)
    for at_ms in (from_ms, to_ms):
        if open_ms <= at_ms < open_ms + length:
            points.append(market._partial(row, at_ms)[0])
    return points


def interval_ms(interval: str) -> int | None:
    return INTERVAL_MS.get(interval)
