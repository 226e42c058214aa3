"""Market data speed and memory: kline store updates, stream message parsing, and the RSS of a store holding
100 symbols x 3 timeframes x 1000 candles (indicators: bench_indicators)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from bench.measurement import Measurement
from worker.market.messages import KlineUpdate, parse_message
from worker.market.store import KlineSeries, Upsert

T0 = 1_735_873_200_000


def _store_updates_per_sec() -> tuple[float, float]:
    kline = KlineSeries("BTCUSDT", "1m", capacity=1000)
    for index in range(1000):
        kline.upsert(T0 + index * 60_000, 1.0, 2.0, 0.5, 1.5, 3.0, closed=index < 999, now_ms=0)
    last = T0 + 999 * 60_000
    updates = 200_000
    started = time.perf_counter()
    for index in range(updates):
        result = kline.upsert(last, 1.0, 2.0, 0.5, 1.0 + index * 1e-6, 3.0, closed=False, now_ms=index)
    assert result is Upsert.UPDATED
    in_place = updates / (time.perf_counter() - started)
    appends = 20_000
    started = time.perf_counter()
    for index in range(appends):
        kline.upsert(last + (index + 1) * 60_000, 1.0, 2.0, 0.5, 1.5, 3.0, closed=True, now_ms=index)
    return in_place, appends / (time.perf_counter() - started)


def _messages_per_sec() -> float:
    payload = {"stream": "btcusdt@kline_1m", "data": {"e": "kline", "E": T0 + 1000, "s": "BTCUSDT", "k": {
        "t": T0, "T": T0 + 59_999, "s": "BTCUSDT", "i": "1m", "f": 100, "L": 200, "o": "96966.85000000",
        "c": "96996.43000000", "h": "96997.31000000", "l": "96966.84000000", "v": "8.97293000", "n": 100,
        "x": False, "q": "870000.00000000", "V": "4.48646500", "Q": "435000.00000000", "B": "0",
    }}}  # fmt: skip
    message = json.dumps(payload)
    kline = KlineSeries("BTCUSDT", "1m", capacity=1000)
    count = 100_000
    started = time.perf_counter()
    for _ in range(count):
        update = parse_message(message)
        assert isinstance(update, KlineUpdate)
        kline.upsert(update.open_time, update.open, update.high, update.low, update.close, update.volume,
                     closed=update.closed, now_ms=update.event_time_ms)  # fmt: skip
    return count / (time.perf_counter() - started)


_RSS_SCRIPT = """
import numpy as np
from worker.market.store import KlineStore
from worker.indicators import helpers

def rss_kib():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1])

before = rss_kib()
store = KlineStore(capacity=1000)
for s in range(100):
    for interval in ('1m', '5m', '1h'):
        series = store.series(f'SYM{s}USDT', interval)
        for i in range(1000):
            series.upsert(1_700_000_000_000 + i * 3_600_000, 1.0, 2.0, 0.5, 1.5, 3.0, closed=True, now_ms=0)
k = store.klines('SYM0USDT', '1h')
helpers.get_latest_rsi(k)
print(before, rss_kib())
"""


def _rss_mib() -> tuple[float, float]:
    result = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT], capture_output=True, text=True, check=True, timeout=120
    )
    before, after = (int(value) / 1024 for value in result.stdout.split())
    return before, after


def run() -> list[Measurement]:
    results: list[Measurement] = []
    in_place, appends = _store_updates_per_sec()
    results.append(Measurement("store: in-place updates of the forming candle", in_place, "updates/s"))
    results.append(Measurement("store: appends to a full 1000-candle series", appends, "updates/s"))
    results.append(Measurement("feed: combined kline messages parsed + stored", _messages_per_sec(), "msg/s"))
    before, after = _rss_mib()
    results.append(Measurement("RSS, 100 symbols x 3 timeframes x 1000 candles", after, "MiB",
                               f"{after - before:.1f} MiB over the process after imports"))  # fmt: skip
    return results
