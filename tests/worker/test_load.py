"""Load figures for scale-machines: sweep ratios over a window, missed runs, and a process tree's CPU and
memory read from /proc (children included)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from worker.load import MIN_MEASURED_CHECKS, CheckCost, ProcessLoad, SweepLoad, predicted_sweep_ratio

BURN_AND_HOLD = """
import sys, time
block = bytearray(int(sys.argv[1]) * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1  # touch every page, so it is resident
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    pass
"""


def _cpu_secs(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_sweep_ratio_is_the_peak_over_the_window() -> None:
    load = SweepLoad(window_secs=60)

    load.record(6, 60, now_monotonic=100)
    load.record(45, 60, now_monotonic=110)
    load.record(3, 60, now_monotonic=150)

    assert load.peak_ratio(now_monotonic=150) == 0.75
    assert load.peak_ratio(now_monotonic=171) == 0.05, "runs older than the window drop out"
    assert SweepLoad().peak_ratio() == 0.0


def test_process_tree_cpu_and_memory_include_children() -> None:
    load = ProcessLoad()
    before = load.read()
    command = [sys.executable, "-c", BURN_AND_HOLD, "64", "1.5"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        load.read()  # the child's CPU counts from here
        child_before, started = _cpu_secs(child.pid), time.monotonic()
        time.sleep(1.0)
        during = load.read()
        child_used, elapsed = _cpu_secs(child.pid) - child_before, time.monotonic() - started
        child.kill()

    assert during.memory_mb > before.memory_mb + 60, "the child's 64 MB are the tree's"
    # The child spins; on a busy machine it gets what it gets, and the tree's figure must include it.
    assert child_used > 0
    assert during.cpu_percent >= child_used / elapsed * 100 * 0.9
    assert during.cpu_count >= 1


def test_a_check_costs_the_sandbox_cpu_over_the_checks_made_once_enough_were_made() -> None:
    cost = CheckCost(prior_secs=0.001)
    pid = os.getpid()  # this process stands in for the sandbox process: its CPU is what the checks used

    assert cost.secs([pid]) == 0.001, "the prior until a measurement"
    started = _cpu_secs(pid)
    deadline = time.process_time() + 0.5
    while time.process_time() < deadline:
        pass
    cost.checks += MIN_MEASURED_CHECKS - 1
    assert cost.secs([pid]) == 0.001, "too few checks to measure"
    cost.checks += 1
    used = _cpu_secs(pid) - started
    measured = cost.secs([pid])

    assert used / MIN_MEASURED_CHECKS * 0.9 <= measured <= (used + 0.05) / MIN_MEASURED_CHECKS
    assert cost.secs([]) == measured, "kept until the next MIN_MEASURED_CHECKS"


def test_predicted_sweep_ratio_counts_every_run_at_once_against_the_shortest_interval() -> None:
    # 100 traders x 200 symbols on a 1m close, at 250 us a check on one CPU, replayed at 10x: a sweep of all
    # of them takes 5 s of wall time, 50 s of the 60 s interval on the market's clock.
    assert predicted_sweep_ratio([(200, 60)] * 100, 250e-6, 1.0, 10.0) == pytest.approx(50 / 60)
    assert predicted_sweep_ratio([(200, 60)] * 100, 250e-6, 2.0, 10.0) == pytest.approx(25 / 60)
    assert predicted_sweep_ratio([(200, 60)] * 100, 250e-6, 1.0, 1.0) == pytest.approx(5 / 60), "live"
    # An hourly trader's run starts with the minutely one's at the top of the hour: both count against 60 s.
    assert predicted_sweep_ratio([(100, 3600), (100, 60)], 0.001, 1.0, 1.0) == pytest.approx(0.2 / 60)
    assert predicted_sweep_ratio([], 0.001, 1.0, 1.0) == 0.0
