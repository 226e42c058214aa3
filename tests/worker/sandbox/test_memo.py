"""Helper memo: one computation per (snapshot, series, helper, arguments), however many programs ask."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.worker.sandbox.conftest import btc_windows
from worker.indicators import helpers
from worker.sandbox import memo
from worker.sandbox.compiler import HELPER_NAMES, compile_signal
from worker.sandbox.guards import program_globals
from worker.sandbox.snapshot import KlineSnapshot, SnapshotReader


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often each real helper runs (every helper still computes: the spy only counts)."""
    counted: dict[str, int] = {}
    for name in HELPER_NAMES:
        real = getattr(helpers, name)

        def spy(*args: Any, _real: Callable[..., Any] = real, _name: str = name, **kwargs: Any) -> Any:
            counted[_name] = counted.get(_name, 0) + 1
            return _real(*args, **kwargs)

        spy.__annotations__ = real.__annotations__
        spy.__wrapped__ = real  # type: ignore[attr-defined]  # so inspect.signature sees the real one
        monkeypatch.setattr(helpers, name, spy)
    return counted


@pytest.fixture
def reader() -> Iterator[SnapshotReader]:
    with KlineSnapshot(btc_windows(3)) as snapshot:
        yield SnapshotReader(json.loads(snapshot.index_json))


def programs(reader: SnapshotReader, sources: list[str]) -> list[Callable[..., Any]]:
    memoised = memo.memoising_helpers(HELPER_NAMES, lambda: reader.memo)
    out = []
    for source in sources:
        namespace = program_globals(memoised)
        exec(compile_signal(source).code, namespace)  # noqa: S102 (our own test programs)
        out.append(namespace["check_signal"])
    return out


def run_all(reader: SnapshotReader, checks: list[Callable[..., Any]]) -> list[bool]:
    symbols = sorted(reader._series)
    return [
        check(symbol, reader.ticker(symbol), reader.klines(symbol)) for check in checks for symbol in symbols
    ]


def test_twenty_programs_asking_for_one_rsi_compute_it_once_per_series(
    calls: dict[str, int], reader: SnapshotReader
) -> None:
    spellings = ["get_latest_rsi(k)", "get_latest_rsi(k, 14)", "get_latest_rsi(k, period=14)"]
    head = "def check_signal(symbol, ticker, klines):\n    k = klines['1h']\n"
    sources = [f"{head}    return {spellings[i % 3]} < {20 + i}\n" for i in range(20)]

    results = run_all(reader, programs(reader, sources))

    assert calls == {"get_latest_rsi": 3}  # three symbols, one series each
    plain = {s: helpers.get_latest_rsi(reader.klines(s)["1h"]) for s in sorted(reader._series)}
    assert results == [plain[s] < 20 + i for i in range(20) for s in sorted(plain)]


def test_different_arguments_series_and_snapshots_are_separate_entries(calls: dict[str, int]) -> None:
    source = (
        "def check_signal(symbol, ticker, klines):\n"
        "    k = klines['1h']\n"
        "    upper, middle, lower = get_latest_bollinger_bands(k, 20, 2.0)\n"
        "    wide = get_latest_bollinger_bands(k, std_dev=3.0)\n"
        "    fast, slow, closes = get_latest_rsi(k, 7), get_latest_rsi(k), get_closes(k)\n"
        "    return fast < slow and upper < wide[0] and closes[-1] > 0\n"
    )
    with KlineSnapshot(btc_windows(2)) as first, KlineSnapshot(btc_windows(2, step=11)) as second:
        for snapshot in (first, second, first):
            reader = SnapshotReader(json.loads(snapshot.index_json))
            run_all(reader, programs(reader, [source, source]))

    # Each reader (a snapshot mapped again) starts empty: 3 readers x 2 symbols x 2 argument lists, however
    # many programs ask; the arrays are handed out as they are, once per check (3 x 2 symbols x 2 programs).
    assert calls == {"get_latest_rsi": 12, "get_latest_bollinger_bands": 12, "get_closes": 12}


def test_arguments_keep_their_types_so_bad_periods_still_raise(reader: SnapshotReader) -> None:
    rsi = memo.memoising_helpers(("get_latest_rsi",), lambda: reader.memo)["get_latest_rsi"]
    k = reader.klines(sorted(reader._series)[0])["1h"]

    assert rsi(k, 14) == helpers.get_latest_rsi(k, 14)
    for bad in (14.0, True):
        with pytest.raises(ValueError, match="period must be a positive integer"):
            rsi(k, bad)
    with pytest.raises(TypeError):
        rsi(k, 14, period=14)
    with pytest.raises(TypeError):
        rsi(k, window=14)
    with pytest.raises(AttributeError):
        rsi(k.close, 14)  # not a series: the helper's own error, nothing remembered
    assert len(reader.memo) == 1


def test_the_memo_stays_bounded(reader: SnapshotReader, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memo, "MAX_ENTRIES", 10)
    sma = memo.memoising_helpers(("get_latest_sma",), lambda: reader.memo)["get_latest_sma"]
    k = reader.klines(sorted(reader._series)[0])["1h"]

    values = [sma(k, period) for period in range(1, 30)]

    assert len(reader.memo) == 10
    assert values == [helpers.get_latest_sma(k, period) for period in range(1, 30)]
