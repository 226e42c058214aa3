"""The recorded market a backtest steps through, fed into the same stores a live feed fills.

Every price, candle and ticker comes from the replay the exchange simulator serves (worker/market/replay.py),
in the form the feed would have stored it: tickers as the stream's event parsed by the feed's parser,
candles closed and forming as the stream delivers them. The moments a backtest visits are the candle
closes and timers of the trader, and, while a position is open in a symbol, every vertex of that symbol's
candle path plus the first instant (to the millisecond) the path reaches one of the position's levels.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from worker.domain.intervals import INTERVAL_MS
from worker.market.klines import Klines
from worker.market.messages import Ticker, parse_ticker
from worker.market.recordings import VOLUME_SCALE, Candles, SymbolData, format_price
from worker.market.replay import SymbolMarket, ticker_event
from worker.market.store import KlineStore
from worker.market.tickers import TickerStore
from worker.sandbox import StepPlan
from worker.signals.market_data import signal_ticker

IntArray = npt.NDArray[np.int64]


class BacktestMarket:
    """The replayed market of a backtest's symbols, and the stores it keeps as a live feed would."""

    def __init__(
        self, recordings: Mapping[str, SymbolData], klines: KlineStore, tickers: TickerStore
    ) -> None:
        self.replays = {symbol: SymbolMarket(data) for symbol, data in recordings.items()}
        self.klines = klines
        self.tickers = tickers
        self._vertices: dict[str, IntArray] = {}
        self._ticker_cache: dict[tuple[str, int], Ticker | None] = {}

    # What there is ----------------------------------------------------------------------------------
    def series(self, symbol: str, timeframe: str) -> Candles:
        """Every recorded (or aggregated) closed candle of `timeframe`."""
        return self.replays[symbol].series(INTERVAL_MS[timeframe])

    def span_ms(self, symbol: str) -> tuple[int, int]:
        """From the first recorded instant of `symbol` to the end of its recordings."""
        replay = self.replays[symbol]
        return replay.first_ms, replay.end_ms

    def close_times(self, symbol: str, timeframe: str, start_ms: int, end_ms: int) -> IntArray:
        """When each candle of `timeframe` closes, within (start_ms, end_ms]."""
        series = self.series(symbol, timeframe)
        closes = series.open_time + series.interval_ms
        return closes[(closes > start_ms) & (closes <= end_ms)]

    def vertices(self, symbol: str) -> IntArray:
        """Every instant where the candle path turns: each tape candle's open, its two turns, and its end."""
        found = self._vertices.get(symbol)
        if found is None:
            tape = self.replays[symbol].tape
            thirds = tape.interval_ms // 3
            found = np.unique(
                np.concatenate(
                    (
                        tape.open_time,
                        tape.open_time + thirds,
                        tape.open_time + 2 * thirds,
                        tape.open_time + tape.interval_ms,
                    )
                )
            )
            self._vertices[symbol] = found
        return found

    def next_vertex(self, symbol: str, after_ms: int) -> int | None:
        vertices = self.vertices(symbol)
        index = int(np.searchsorted(vertices, after_ms, side="right"))
        return int(vertices[index]) if index < len(vertices) else None

    # Prices ------------------------------------------------------------------------------------------
    def price(self, symbol: str, at_ms: int) -> Decimal | None:
        """The last traded price at `at_ms` as a ticker carries it."""
        price = self.replays[symbol].price_at(at_ms)
        return None if price is None else Decimal(format_price(price))

    def first_crossing(
        self, symbol: str, start_ms: int, end_ms: int, levels: Iterable[Decimal]
    ) -> int | None:
        """The first instant in (start_ms, end_ms) at which the path reaches one of `levels` from the price
        at `start_ms` (the span lies on one leg of the path: the price moves one way); None if none is."""
        if end_ms - start_ms < 2:
            return None
        first, last = self.price(symbol, start_ms), self.price(symbol, end_ms - 1)
        if first is None or last is None or first == last:
            return None
        rising = last > first
        crossed = [level for level in levels if (first < level <= last if rising else last <= level < first)]
        if not crossed:
            return None
        target = min(crossed) if rising else max(crossed)
        low, high = start_ms + 1, end_ms - 1  # the answer is in [low, high]
        while low < high:
            middle = (low + high) // 2
            price = self.price(symbol, middle)
            assert price is not None
            if price >= target if rising else price <= target:
                high = middle
            else:
                low = middle + 1
        return low

    # The stores, as the feed keeps them ---------------------------------------------------------------
    def ticker(self, symbol: str, at_ms: int) -> Ticker | None:
        key = (symbol, at_ms)
        if key not in self._ticker_cache:
            answer = self.replays[symbol].ticker(at_ms)
            self._ticker_cache[key] = None if answer is None else parse_ticker(ticker_event(answer, at_ms))
        return self._ticker_cache[key]

    def publish_ticker(self, symbol: str, at_ms: int) -> None:
        """The ticker stream's update at `at_ms` (the position monitor sees it at once)."""
        ticker = self.ticker(symbol, at_ms)
        if ticker is not None:
            self.tickers.update(ticker)

    def publish_price(self, symbol: str, at_ms: int) -> None:
        """The ticker's update at `at_ms` where only its price will be read (the monitor's and the
        executor's moments): the last price is exact, the 24 h figures are the last full ticker's."""
        previous, price = self.tickers.get(symbol), self.price(symbol, at_ms)
        if previous is None or price is None:
            self.publish_ticker(symbol, at_ms)
        else:
            self.tickers.update(replace(previous, last_price=price, event_time_ms=at_ms))

    def publish_klines(self, symbol: str, timeframe: str, at_ms: int) -> None:
        """Bring the stored series up to `at_ms`: the candles closed since, then the forming one."""
        stored = self.klines.series(symbol, timeframe)
        series = self.series(symbol, timeframe)
        interval_ms = INTERVAL_MS[timeframe]
        end = int(np.searchsorted(series.open_time, at_ms - interval_ms, side="right"))
        last = stored.last_open_time
        if last is None:
            start = max(0, end - stored.capacity)
        else:
            # From the newest stored candle on if it was stored while forming, else from the one after it.
            start = int(np.searchsorted(series.open_time, last, side="left")) + stored.last_closed
        for index in range(start, end):
            stored.upsert(
                int(series.open_time[index]), float(series.open[index]), float(series.high[index]),
                float(series.low[index]), float(series.close[index]),
                int(series.volume_units[index]) / VOLUME_SCALE, closed=True, now_ms=at_ms,
            )  # fmt: skip
        # At a close the stream has delivered the closed candle; the next one forms once time passed in it.
        forming = self.replays[symbol].candle_at(interval_ms, at_ms) if at_ms % interval_ms else None
        if forming is not None:
            stored.upsert(
                forming.open_time, forming.open, forming.high, forming.low, forming.close,
                forming.volume_units / VOLUME_SCALE, closed=False, now_ms=at_ms,
            )  # fmt: skip

    # A replay of check_signal --------------------------------------------------------------------------
    def plan(
        self,
        symbol: str,
        timeframes: Sequence[str],
        times: Sequence[int],
        capacity: int,
        *,
        with_ticker: bool = True,
    ) -> tuple[dict[str, Klines], StepPlan]:
        """What check_signal sees at each of `times` (the newest `capacity` candles of each timeframe, the
        forming one included, and the ticker): the series to put in a snapshot, and the sandbox's plan."""
        windows: dict[str, list[tuple[int, int, int]]] = {}
        forming: list[list[float]] = []
        full: dict[str, Klines] = {}
        replay = self.replays[symbol]
        for timeframe in timeframes:
            series, interval_ms = self.series(symbol, timeframe), INTERVAL_MS[timeframe]
            ends = np.searchsorted(series.open_time, np.asarray(times, dtype=np.int64) - interval_ms, "right")
            spans = []
            for at_ms, end in zip(times, ends.tolist(), strict=True):
                candle = replay.candle_at(interval_ms, at_ms) if at_ms % interval_ms else None
                index = -1
                if candle is not None:
                    index = len(forming)
                    forming.append(
                        [candle.open_time, candle.open, candle.high, candle.low, candle.close,
                         candle.volume_units / VOLUME_SCALE]
                    )  # fmt: skip
                spans.append((max(0, end - capacity + (candle is not None)), end, index))
            low = min((start for start, _, _ in spans), default=0)
            high = max((end for _, end, _ in spans), default=0)
            rows = slice(low, high)
            full[timeframe] = Klines(
                series.open_time[rows], series.open[rows], series.high[rows], series.low[rows],
                series.close[rows], series.volume_units[rows] / VOLUME_SCALE,
            )  # fmt: skip
            windows[timeframe] = [(start - low, end - low, index) for start, end, index in spans]
        steps: list[dict[str, object]] = []
        for position, at_ms in enumerate(times):
            # The 24 h ticker is most of a step's cost; code that never reads it is not given one.
            ticker = self.ticker(symbol, at_ms) if with_ticker else None
            steps.append(
                {
                    "w": [list(windows[timeframe][position]) for timeframe in timeframes],
                    "t": signal_ticker(ticker) if ticker is not None else {},
                }
            )
        return full, StepPlan(symbol, tuple(timeframes), steps, forming)
