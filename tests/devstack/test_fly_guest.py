"""The Fly stand-in makes a machine's guest size real: its memory limit kills the whole process tree once its
PSS is over (as the guest kernel's OOM killer would), its CPUs are the cores the process may use."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from devstack.fly.guest import enforce_memory, guest_size, pin_to_cpus, process_tree

# A parent holding `argv[1]` MB in a child it started (the tree, not one process, is what counts).
PARENT_WITH_HUNGRY_CHILD = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", '''
import sys, time
block = bytearray(int(sys.argv[1]) * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
print("ready", flush=True)
time.sleep(60)
''', sys.argv[1]], stdout=sys.stdout)
time.sleep(60)
"""


def _ends(pid: int, timeout_secs: float = 2.0) -> bool:
    """True once `pid` is gone or a zombie (an orphan's zombie waits for a reaper that may never come)."""
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


async def _run(mb: int, limit_mb: int, log_path: Path) -> tuple[list[int], int | None, int | None]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT_WITH_HUNGRY_CHILD, str(mb), stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    assert (await process.stdout.readline()).strip() == b"ready"
    tree = process_tree(process.pid)
    exited = asyncio.Event()
    killed_at: list[int] = []
    watcher = asyncio.create_task(enforce_memory(process.pid, limit_mb, exited, log_path, killed_at.append))
    try:
        code = await asyncio.wait_for(process.wait(), 3)
    except TimeoutError:
        code = None
        for pid in reversed(tree):
            os.kill(pid, signal.SIGKILL)
        await process.wait()
    exited.set()
    await watcher
    return tree, code, killed_at[0] if killed_at else None


async def test_a_tree_over_its_memory_is_killed_and_the_kill_logged(tmp_path: Path) -> None:
    log_path = tmp_path / "machine.log"

    tree, code, killed_at_kb = await _run(96, 64, log_path)

    assert len(tree) == 2
    assert code == -9, "SIGKILL, as the OOM killer sends"
    assert killed_at_kb is not None and killed_at_kb > 64 * 1024
    for pid in tree:
        assert await asyncio.to_thread(_ends, pid), f"process {pid} of the tree still runs"
    assert "Out of memory: Killed process" in await asyncio.to_thread(log_path.read_text)


async def test_a_tree_within_its_memory_is_left_alone(tmp_path: Path) -> None:
    _, code, killed_at_kb = await _run(16, 256, tmp_path / "machine.log")

    assert (code, killed_at_kb) == (None, None)


def test_guest_size_defaults_and_cpu_pinning() -> None:
    assert guest_size({}) == (1, 256)
    assert guest_size({"guest": {"cpus": 2, "memory_mb": 512}}) == (2, 512)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"]) as process:
        pin_to_cpus(process.pid, 1)
        pinned = os.sched_getaffinity(process.pid)
        pin_to_cpus(process.pid, 8)
        widened = os.sched_getaffinity(process.pid)
        process.kill()

    assert len(pinned) == 1
    assert widened == os.sched_getaffinity(0), "more CPUs than the host has: every core"
