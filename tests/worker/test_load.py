"""Load figures for scale-machines: sweep ratios over a window, missed runs, and a process tree's CPU and
memory read from /proc (children included)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from worker.load import ProcessLoad, SweepLoad

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
