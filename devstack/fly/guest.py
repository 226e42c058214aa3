"""A machine's guest size made real for its local process: CPUs as the cores it may run on, memory as a limit
on the PSS of the worker and every process it starts. Over the limit the whole tree is SIGKILLed, as the
guest kernel's OOM killer ends a Fly machine's process, and the exit is reported with `oom_killed`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_CPUS = 1  # shared-cpu-1x, Fly's default size
DEFAULT_MEMORY_MB = 256
SAMPLE_SECS = 0.2
_PROC = Path("/proc")


def guest_size(config: dict[str, object]) -> tuple[int, int]:
    """(cpus, memory_mb) of a machine config's guest, with Fly's defaults."""
    guest = config.get("guest")
    if not isinstance(guest, dict):
        guest = {}
    return int(guest.get("cpus") or DEFAULT_CPUS), int(guest.get("memory_mb") or DEFAULT_MEMORY_MB)


def pin_to_cpus(pid: int, cpus: int) -> None:
    """Let `pid` (and the processes it starts later) run on at most `cpus` of this host's cores; machines
    start on different cores (by pid), so small machines spread over the host as Fly spreads them."""
    available = sorted(os.sched_getaffinity(0))
    start = pid % len(available)
    rotated = available[start:] + available[:start]
    os.sched_setaffinity(pid, rotated[: max(1, min(cpus, len(available)))])


def process_tree(pid: int) -> list[int]:
    """`pid` and every live descendant."""
    children: dict[int, list[int]] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, queue = [pid], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def tree_pss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            for line in (_PROC / str(pid) / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
    return total


async def enforce_memory(
    pid: int, limit_mb: int, exited: asyncio.Event, log_path: Path, on_kill: Callable[[int], None]
) -> None:
    """Until `exited`: SIGKILL the process tree of `pid` once its PSS exceeds `limit_mb`."""
    limit_kb = limit_mb * 1024
    while not exited.is_set():
        pids = await asyncio.to_thread(process_tree, pid)
        used_kb = await asyncio.to_thread(tree_pss_kb, pids)
        if used_kb > limit_kb:
            on_kill(used_kb)
            # What Fly's logs show when the guest kernel kills a process (the line dmesg prints).
            with log_path.open("a") as log:
                log.write(
                    f"[    0.000000] Out of memory: Killed process {pid} (python) total-pss:{used_kb}kB,"
                    f" limit:{limit_kb}kB\n"
                )
            for victim in reversed(pids):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            logger.info("oom kill pid=%d pss_kb=%d limit_mb=%d", pid, used_kb, limit_mb)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(exited.wait(), SAMPLE_SECS)
