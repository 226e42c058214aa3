"""Kline snapshots: the segment's contents, its owner-only file, no helper process, and orphans removed."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.worker.sandbox.conftest import btc_windows
from worker.sandbox import snapshot as snapshot_module
from worker.sandbox.snapshot import KlineSnapshot, SnapshotReader

REPO = Path(__file__).resolve().parents[3]
SHM = Path("/dev/shm")  # where POSIX shared memory lives


def test_a_reader_sees_every_series_and_ticker_as_written() -> None:
    klines = btc_windows(3)
    tickers = {symbol: {"lastPrice": 1.5 + index} for index, symbol in enumerate(klines)}

    with KlineSnapshot(klines, tickers) as snapshot:
        reader = SnapshotReader(json.loads(snapshot.index_json))
        for symbol, by_timeframe in klines.items():
            view = reader.klines(symbol)["1h"]
            for field in ("open_time", "open", "high", "low", "close", "volume"):
                assert np.array_equal(getattr(view, field), getattr(by_timeframe["1h"], field))
            assert not view.close.flags.writeable
            assert reader.ticker(symbol)["lastPrice"] == tickers[symbol]["lastPrice"]


def test_the_segment_is_the_owners_alone_and_needs_no_tracker_process() -> None:
    with KlineSnapshot(btc_windows(1)) as snapshot:
        mode = (SHM / snapshot.name).stat().st_mode
        assert stat.S_IMODE(mode) == 0o600
        assert snapshot.name.startswith(f"trademind-klines-{os.getpid()}-")

    assert snapshot.name in snapshot_module.spare_names() or not (SHM / snapshot.name).exists()


def test_closed_segments_are_reused_few_are_kept_and_none_outlive_the_process() -> None:
    script = (
        "import os, json\n"
        "from tests.worker.sandbox.conftest import btc_windows\n"
        "from worker.sandbox.snapshot import KlineSnapshot, SnapshotReader, MAX_SPARE\n"
        "names = []\n"
        "for step in (97, 5, 11, 13):\n"
        "    with KlineSnapshot(btc_windows(3, step=step)) as snapshot:\n"
        "        names.append(snapshot.name)\n"
        "        reader = SnapshotReader(json.loads(snapshot.index_json))\n"
        "        expected = btc_windows(3, step=step)\n"
        "        for s in expected:\n"
        "            assert (reader.klines(s)['1h'].close == expected[s]['1h'].close).all()\n"
        "        del reader\n"
        "open_together = [KlineSnapshot(btc_windows(1)) for _ in range(MAX_SPARE + 2)]\n"
        "for snapshot in open_together:\n"
        "    snapshot.close()\n"
        "kept = [n for n in os.listdir('/dev/shm') if n.startswith(f'trademind-klines-{os.getpid()}-')]\n"
        "print(os.getpid(), len(set(names)), len(kept), MAX_SPARE)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    )

    pid, reused, kept, most = (int(value) for value in result.stdout.split())
    assert reused == 1  # one segment served every snapshot in turn, each read back with its own candles
    assert kept == most  # closing more at once than that removes the rest
    assert not list(SHM.glob(f"trademind-klines-{pid}-*"))  # spares go when the process exits


def test_making_snapshots_starts_no_other_process() -> None:
    # multiprocessing.shared_memory would start its resource tracker: a 13 MB process beside the worker.
    script = (
        "import os\n"
        "from tests.worker.sandbox.conftest import btc_windows\n"
        "from worker.sandbox.snapshot import KlineSnapshot\n"
        "for _ in range(3):\n"
        "    KlineSnapshot(btc_windows(2)).close()\n"
        "me = str(os.getpid())\n"
        "print(sum(open(f'/proc/{p}/stat').read().split(')')[-1].split()[1] == me\n"
        "          for p in os.listdir('/proc') if p.isdigit() and os.path.exists(f'/proc/{p}/stat')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=REPO
    )

    assert result.stdout.strip() == "0"


def test_segments_of_dead_workers_are_removed_and_live_ones_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    dead, alive = (
        SHM / f"trademind-klines-{int(ended.stdout)}-0123",
        SHM / f"trademind-klines-{os.getppid()}-4567",
    )
    other = SHM / f"someone-else-{int(ended.stdout)}"
    for path in (dead, alive, other):
        path.write_bytes(b"x")
    monkeypatch.setattr(snapshot_module, "_swept_for_pid", None)  # as in a freshly started worker
    try:
        KlineSnapshot(btc_windows(1)).close()

        assert not dead.exists()
        assert alive.exists() and other.exists()
    finally:
        for path in (dead, alive, other):
            path.unlink(missing_ok=True)
