"""The hourly counters count the last hour only, in bounded memory; the process age counts from exec."""

from __future__ import annotations

import subprocess
import sys

from worker.metrics import HourlyCounter


def test_counts_expire_after_an_hour() -> None:
    counter = HourlyCounter()
    counter.add(5, now_monotonic=1000.0)
    counter.add(3, now_monotonic=2000.0)

    assert counter.last_hour(now_monotonic=2000.0) == 8
    assert counter.last_hour(now_monotonic=1000.0 + 3600 + 60) == 3


def test_memory_stays_bounded_under_a_flood() -> None:
    counter = HourlyCounter()
    for second in range(0, 7200):
        counter.add(1, now_monotonic=float(second))

    assert counter.last_hour(now_monotonic=7199.0) == 3600
    assert len(counter._buckets) <= 61


def test_process_age_counts_from_the_process_start_not_from_the_import() -> None:
    # The child sleeps before importing worker.metrics: that time is part of its age.
    code = "import time; time.sleep(0.4); from worker.metrics import process_age_secs as age; print(age())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=9)

    age_secs = float(done.stdout)
    assert 0.4 <= age_secs < 10
