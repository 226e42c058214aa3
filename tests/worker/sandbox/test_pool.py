"""Sandbox processes: isolation, per-symbol errors, deadlines, crashes, cancellation and the snapshot."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from tests.worker.sandbox.conftest import RecordingReporter, btc_windows
from tests.worker.sandbox.hostile import body
from worker.sandbox import (
    KlineSnapshot,
    SandboxConfig,
    SandboxPool,
    SignalRunner,
    SignalRuntimeError,
    compile_signal,
    protocol,
)
from worker.sandbox import snapshot as snapshot_module

SECRET = "machine-token-that-must-never-reach-a-sandbox"
# Burns about `n` milliseconds of CPU per check (a loop signal code may legitimately run).
BUSY = body("total = 0", "for i in range(int(ticker['work'])):", "    total += i", "return total >= 0")


@pytest_asyncio.fixture(loop_scope="function")
async def pool(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SandboxPool]:
    monkeypatch.setenv("MACHINE_TOKEN", SECRET)
    async with SandboxPool(SandboxConfig(processes=2, default_deadline_ms=250, grace_ms=400)) as started:
        yield started


def read_proc(pid: int, name: str) -> str:
    return Path(f"/proc/{pid}/{name}").read_bytes().decode(errors="replace")


async def test_sandbox_processes_start_bare_and_limited(pool: SandboxPool) -> None:
    for pid in pool.pids:
        environment = read_proc(pid, "environ")
        limits = {
            line[:26].strip(): line[26:].split()[:2] for line in read_proc(pid, "limits").splitlines()[1:]
        }

        assert SECRET not in environment and "MACHINE_TOKEN" not in environment
        assert sorted(entry.split("=")[0] for entry in environment.split("\0") if entry) == sorted(
            ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "LC_ALL"]
        )
        assert os.readlink(f"/proc/{pid}/cwd") == "/"
        assert limits["Max file size"] == ["0", "0"]
        assert limits["Max core file size"] == ["0", "0"]
        assert limits["Max open files"] == ["16", "16"]
        assert limits["Max processes"] == ["0", "0"]
        address_space_mb = int(limits["Max address space"][0]) / 2**20
        assert 192 < address_space_mb < 4096
        assert len(os.listdir(f"/proc/{pid}/fd")) == 4  # /dev/null x3 and the socket


async def test_errors_are_per_symbol_with_the_line_and_the_rest_still_run(pool: SandboxPool) -> None:
    klines = btc_windows(4)
    symbols = list(klines)
    code = body(
        "closes = get_closes(klines['1h'])",
        f"if symbol == '{symbols[1]}':",
        "    return len(symbol) / 0",
        f"if symbol == '{symbols[2]}':",
        "    return 1.0",
        "return closes[-1] > 0",  # a numpy bool
    )
    runner = SignalRunner(pool)

    with KlineSnapshot(klines) as snapshot:
        result = await runner.evaluate(
            compile_signal(code, trader_id="t"), [*symbols, "NOPEUSDT", symbols[0]], snapshot
        )

    assert result.matches == [symbols[0], symbols[3]]
    assert result.errors == {
        symbols[1]: "line 4: ZeroDivisionError: division by zero",
        symbols[2]: "check_signal returned float, expected True or False",
        "NOPEUSDT": "no market data for NOPEUSDT",
    }
    assert result.checked == 4 and result.duration_ms > 0


async def test_the_deadline_is_per_trader(pool: SandboxPool) -> None:
    klines = btc_windows(2)
    tickers = {symbol: {"work": 400_000} for symbol in klines}  # tens of milliseconds of CPU per check
    reporter = RecordingReporter()
    runner = SignalRunner(pool, reporter)
    patient = compile_signal(BUSY, trader_id="patient", version=1)
    hasty = compile_signal(BUSY, trader_id="hasty", version=1)

    with KlineSnapshot(klines, tickers) as snapshot:
        allowed = await runner.evaluate(patient, list(klines), snapshot, deadline_ms=5000)
        with pytest.raises(SignalRuntimeError, match="longer than the 2 ms deadline") as stopped:
            await runner.evaluate(hasty, list(klines), snapshot, deadline_ms=2)

    assert allowed.matches == list(klines)
    assert stopped.value.trader_id == "hasty"
    assert list(reporter.reports) == ["hasty"]


async def test_traders_with_identical_code_share_each_symbols_result(pool: SandboxPool) -> None:
    klines = btc_windows(4)
    tickers = {symbol: {"work": 1_000_000} for symbol in klines}  # ~50 ms of CPU per check
    runner = SignalRunner(pool)
    first, second = (compile_signal(BUSY, trader_id=trader, version=1) for trader in ("first", "second"))
    different = compile_signal(BUSY.replace("total = 0", "total = 1"), trader_id="different", version=1)

    with KlineSnapshot(klines, tickers) as snapshot:
        spent = [sandbox_cpu_secs(pool)]
        for program in (first, second, different):
            result = await runner.evaluate(program, list(klines), snapshot)
            assert result.matches == list(klines)
            spent.append(sandbox_cpu_secs(pool))

    first_secs, second_secs, different_secs = (b - a for a, b in itertools.pairwise(spent))
    assert second_secs < first_secs / 4  # the same code on the same snapshot: answered from the first run
    assert different_secs > first_secs / 2


def sandbox_cpu_secs(pool: SandboxPool) -> float:
    """CPU time the pool's processes have used (user + system)."""
    ticks = 0
    for pid in pool.pids:
        fields = read_proc(pid, "stat").rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


async def test_a_crashing_process_is_replaced_and_the_trader_told_why(pool: SandboxPool) -> None:
    klines = btc_windows(1)
    tickers = {symbol: {"work": 10**9} for symbol in klines}  # runs until something stops it
    runner = SignalRunner(pool)
    program = compile_signal(BUSY, trader_id="crashy")
    before = set(pool.pids)

    with KlineSnapshot(klines, tickers) as snapshot:
        batch = asyncio.create_task(runner.evaluate(program, list(klines), snapshot, deadline_ms=20_000))
        await asyncio.sleep(0.3)
        busy = [pid for pid in before if read_proc(pid, "stat").split()[2] == "R"]
        assert len(busy) == 1
        os.kill(busy[0], signal.SIGSEGV)
        with pytest.raises(SignalRuntimeError, match=r"crashed \(SIGSEGV\)"):
            await batch

    assert len(pool.pids) == 2 and busy[0] not in pool.pids
    assert pool.stats().restarts == 1


async def test_a_cancelled_batch_kills_its_process_and_the_next_batch_gets_a_new_one(
    pool: SandboxPool,
) -> None:
    klines = btc_windows(2)
    runner = SignalRunner(pool)
    slow = compile_signal(BUSY, trader_id="slow")
    quick = compile_signal(body("return True"), trader_id="quick")

    with KlineSnapshot(klines, {symbol: {"work": 10**9} for symbol in klines}) as snapshot:
        batch = asyncio.create_task(runner.evaluate(slow, list(klines), snapshot, deadline_ms=20_000))
        await asyncio.sleep(0.2)
        batch.cancel()
        with pytest.raises(asyncio.CancelledError):
            await batch
        assert len(pool.pids) == 1
        results = await asyncio.gather(*(runner.evaluate(quick, list(klines), snapshot) for _ in range(4)))

    assert all(result.matches == list(klines) for result in results)
    assert len(pool.pids) == 2


async def test_each_snapshot_is_read_fresh_and_removed_when_closed(pool: SandboxPool) -> None:
    runner = SignalRunner(pool)
    # The helper values are remembered per snapshot; a new snapshot must never see the old ones.
    program = compile_signal(
        body(
            "k = klines['1h']", "return get_latest_rsi(k, 14) == ticker['rsi'] and len(k) == 300 and k.closed"
        )
    )
    answers = []
    for shift in (0, 5, 0):
        klines = {s: {"1h": series["1h"]} for s, series in btc_windows(6, step=97 + shift).items()}
        tickers = {s: {"rsi": _rsi(series["1h"].close)} for s, series in klines.items()}
        with KlineSnapshot(klines, tickers) as snapshot:
            name = snapshot.name
            for _ in range(3):  # both processes, several times each
                answers.append(await runner.evaluate(program, list(klines), snapshot))
        # Removed, or kept as one of the few spares the next snapshot is written into.
        assert name in snapshot_module.spare_names() or not await asyncio.to_thread(
            Path("/dev/shm", name).exists
        )
    kept = await asyncio.to_thread(lambda: list(Path("/dev/shm").glob(f"trademind-klines-{os.getpid()}-*")))
    assert len(kept) <= snapshot_module.MAX_SPARE

    assert all(result.matches == list(klines) and not result.errors for result in answers)
    with pytest.raises(ValueError, match="closed"):
        await runner.evaluate(program, list(klines), snapshot)


def _rsi(closes: object) -> float:
    from worker.indicators import series  # noqa: PLC0415

    return float(series.rsi(closes, 14)[-1])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "body_bytes",
    [
        b"X",  # unknown kind
        b"R!",  # READY with a payload
        b"S\0\0",  # index cut short
        b"S\0\0\0\0\x04",  # status 4 does not exist
        b"D\0\0\0\x01!",  # DONE with trailing bytes
    ],
)
def test_malformed_frames_from_a_sandbox_are_refused(body_bytes: bytes) -> None:
    with pytest.raises(protocol.ProtocolViolation):
        protocol.decode_child_frame(body_bytes)


def test_frames_round_trip_and_messages_are_clipped() -> None:
    long_message = "x" * 5000 + "\n" + "y"

    frames = [
        protocol.encode_results(7, bytes([0, 1, 2])),
        protocol.encode_error(8, long_message),
        protocol.encode_done(10),
        protocol.encode_fatal(9, "stopped"),
    ]
    decoded = [protocol.decode_child_frame(frame[protocol.LENGTH.size :]) for frame in frames]

    assert decoded[0] == protocol.Results(7, b"\0\x01\x02")
    assert isinstance(decoded[1], protocol.Error) and len(decoded[1].message) == protocol.MAX_MESSAGE_CHARS
    assert decoded[2:] == [protocol.Done(10), protocol.Fatal(9, "stopped")]
    with pytest.raises(protocol.ProtocolViolation):
        protocol.check_child_length(protocol.MAX_CHILD_FRAME_BYTES + 1)


async def test_a_process_maps_a_reused_segment_once(pool: SandboxPool) -> None:
    runner = SignalRunner(pool)
    program = compile_signal(body("return get_latest_rsi(klines['1h'], 14) >= 0"))
    names = []
    for step in (97, 5, 11):
        klines = btc_windows(4, step=step)
        with KlineSnapshot(klines) as snapshot:
            names.append(snapshot.name)
            result = await runner.evaluate(program, list(klines), snapshot)
            assert result.matches == list(klines) and not result.errors

    # Each snapshot was written into the closed one's segment; the processes dropped the older
    # generations of it, so none maps the segment (and counts its pages) more than once.
    assert len(set(names)) == 1
    for pid in pool.pids:
        maps = await asyncio.to_thread(read_proc, pid, "maps")
        assert sum(line.endswith(f"/{names[0]}") for line in maps.splitlines()) <= 1
