"""Start, find and stop the stack's background processes by pid, without leaving orphans.

Each process runs in its own session (so its pid is also its process-group id) and is recorded in
`<state>/run/<name>.json` with its pid and kernel start time; a recorded pid whose start time no longer
matches belongs to someone else and is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from devstack.errors import StackError

_CLOCK_TICKS_PER_SEC = os.sysconf("SC_CLK_TCK")


def process_start_ticks(pid: int) -> int | None:
    """Return the kernel start time of `pid` (clock ticks since boot), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # Field 2 (comm) may contain spaces; the fields after the last ')' are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie has exited; only its parent's wait() is missing
        return None
    return int(fields[19])


def process_group_members(pgid: int) -> list[int]:
    """Return the live pids whose process group is `pgid`."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


@dataclass(frozen=True)
class ProcessRecord:
    """A process this stack started: enough to find it again and to know it is still the same one."""

    name: str
    pid: int
    start_ticks: int
    port: int | None
    log_path: str

    def is_alive(self) -> bool:
        return process_start_ticks(self.pid) == self.start_ticks


class ProcessRegistry:
    """The pid files under one run directory."""

    def __init__(self, run_dir: Path) -> None:
        self._run_dir = run_dir

    def _path(self, name: str) -> Path:
        return self._run_dir / f"{name}.json"

    def get(self, name: str) -> ProcessRecord | None:
        try:
            return ProcessRecord(**json.loads(self._path(name).read_text()))
        except FileNotFoundError:
            return None

    def live(self, name: str) -> ProcessRecord | None:
        record = self.get(name)
        return record if record is not None and record.is_alive() else None

    def save(self, record: ProcessRecord) -> None:
        self._run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self._path(record.name).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        tmp.replace(self._path(record.name))

    def forget(self, name: str) -> None:
        self._path(name).unlink(missing_ok=True)

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        log_path: Path,
        port: int | None = None,
        env: dict[str, str] | None = None,
    ) -> ProcessRecord:
        """Start `argv` (argv[0] an absolute path) in its own session, output appended to `log_path`.

        posix_spawn rather than subprocess.Popen: the process must outlive us, so there is no Popen
        object to keep (it would warn about a child still running when it is collected).
        """
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        stdin_fd = os.open(os.devnull, os.O_RDONLY)
        try:
            pid = os.posix_spawn(
                argv[0],
                argv,
                os.environ if env is None else env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, stdin_fd, 0),
                    (os.POSIX_SPAWN_DUP2, log_fd, 1),
                    (os.POSIX_SPAWN_DUP2, log_fd, 2),
                ],
                setsid=True,
            )
        finally:
            os.close(log_fd)
            os.close(stdin_fd)
        return self.adopt(name, pid, log_path=log_path, port=port)

    def adopt(self, name: str, pid: int, *, log_path: Path, port: int | None = None) -> ProcessRecord:
        """Record a running process under `name` (ours, or one started for us, like pg_ctl's postmaster)."""
        start_ticks = process_start_ticks(pid)
        if start_ticks is None:
            raise StackError(f"{name} (pid {pid}) exited at once; see {log_path}")
        record = ProcessRecord(name, pid, start_ticks, port, str(log_path))
        self.save(record)
        return record

    def stop(
        self, name: str, *, first_signal: signal.Signals = signal.SIGTERM, timeout_secs: float = 15.0
    ) -> bool:
        """Stop the recorded process and everything in its process group; True if something was stopped.

        Sends `first_signal` to the leader, waits up to `timeout_secs` for the whole group to exit, then
        SIGKILLs what is left.
        """
        record = self.get(name)
        if record is None:
            return False
        if not record.is_alive():
            self.forget(name)
            return False
        group = set(process_group_members(record.pid)) | {record.pid}
        with contextlib.suppress(ProcessLookupError):
            os.kill(record.pid, first_signal)
        deadline = time.monotonic() + timeout_secs
        while time.monotonic() < deadline:
            if not record.is_alive() and not process_group_members(record.pid):
                break
            time.sleep(0.05)
        else:
            for pid in group | set(process_group_members(record.pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _reap(record.pid)
        self.forget(name)
        return True


def _reap(pid: int) -> None:
    """Collect the exit status if the process was our own child, so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
