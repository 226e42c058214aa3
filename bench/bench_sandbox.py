"""The signal sandbox under load: process start and size, compile time, full sweeps (20 x 100 and 100 x 200).

A sweep is what the scheduler does per tick: publish one snapshot of every symbol's klines (3 timeframes
x 1000 real candles each) into shared memory, evaluate every trader's program over its symbols in the
sandbox pool concurrently, and remove the snapshot. Every round uses different candles, so no helper
result is reused from an earlier round. Two trader mixes: LLM-style code built on the helpers (what the
generate-strategy prompt asks for), and the Gemini stand-in's generated code, whose MACD and EMA-cross
strategies compute EMAs in pure-Python loops. Targets (issue 16): 20 x 100 x 3 <= 60 ms with helper
strategies and <= 120 ms with the stand-in's, 100 x 200 x 3 <= 250 ms.
"""

from __future__ import annotations

import asyncio
import csv
import statistics
import time
from pathlib import Path

from bench.measurement import Measurement
from devstack.gemini.strategy import build_strategy
from worker.market.klines import Klines
from worker.metrics import resident_memory_mb
from worker.sandbox import KlineSnapshot, SandboxConfig, SandboxPool, SignalProgram, SignalRunner
from worker.sandbox.compiler import compile_signal
from worker.sandbox.pool import SandboxProcess

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "klines"
CANDLES = 1000
ROUNDS = 7
SOURCES = {"15m": ("ETHUSDT", "1m"), "1h": ("BTCUSDT", "1h"), "4h": ("BTCUSDT", "5m")}

HELPER_TEMPLATES = [
    "rsi = get_latest_rsi(k, {p})\n    return rsi < {lo}",
    "macd, signal, hist = get_latest_macd(k)\n"
    "    return hist > 0 and macd > signal and get_latest_rsi(k, 14) > {lo}",
    "upper, middle, lower = get_latest_bollinger_bands(k, 20, 2.0)\n    return get_closes(k)[-1] > upper",
    "return get_latest_ema(k, {p}) > get_latest_ema(k, 50) and get_latest_ema(klines['4h'], 20) > 0",
    "return get_latest_volumes_spike(k)",
    "kk, d = get_latest_stochastic(k, 14, 3)\n    return kk < {lo} and kk > d",
    "return get_latest_adx(k, 14) > 25 and get_latest_rsi(klines['15m'], {p}) > 50",
    "return get_closes(k)[-1] > get_highest_high(k, {p}) * 0.99 and get_latest_atr(k, 14) > 0",
    "return get_latest_cci(k, 20) < -{lo} or get_latest_williams_r(k, 14) < -80",
    "return get_price_change_percent(k, 24) > 2 and get_latest_rsi(klines['4h'], 14) < 70",
]


def helper_strategy(index: int, *, distinct: bool = False) -> str:
    """One of 30 helper strategies (index mod 10 templates x 3 parameter sets); `distinct` makes every
    index's source its own (a comment naming it), as if each trader's code had been written apart."""
    template = HELPER_TEMPLATES[index % len(HELPER_TEMPLATES)]
    template = template.replace(
        "get_latest_volumes_spike(k)", "get_volumes(k)[-1] > 2.0 * get_latest_volume_ma(k, 20)"
    )
    logic = template.format(p=(14, 21, 9)[index % 3], lo=(30, 40, 100)[index % 3])
    return (
        (f"# trader {index}\n" if distinct else "") + "def check_signal(symbol, ticker, klines):\n"
        "    k = klines['1h']\n"
        "    if len(get_closes(k)) < 100:\n"
        "        return False\n"
        f"    {logic}\n"
    )


def generated_strategy(index: int) -> str:
    ideas = [
        "RSI below 40 on 1h",
        "MACD crosses above its signal line on 1h",
        "EMA 9/21 cross up on 1h",
        "close above the upper bollinger band on 1h",
        "volume spike 2x on 1h",
    ]
    return str(build_strategy(f"<<<DESCRIPTION\n{ideas[index % 5]}\nDESCRIPTION>>>")["signalCode"])


def load(symbol: str, timeframe: str) -> Klines:
    with (DATA_DIR / f"{symbol}-{timeframe}.csv").open() as handle:
        rows = list(csv.reader(handle))[1:]
    return Klines.from_arrays(*zip(*rows, strict=True))


def market(symbols: int, round_index: int, recordings: dict[str, Klines]) -> dict[str, dict[str, Klines]]:
    """`symbols` symbols x 3 timeframes of CANDLES real candles; each symbol and round a different window."""
    out: dict[str, dict[str, Klines]] = {}
    for number in range(symbols):
        out[f"S{number:03d}USDT"] = {}
        for timeframe, series in recordings.items():
            span = len(series) - CANDLES
            start = (number * 7919 + round_index * 104_729) % span
            out[f"S{number:03d}USDT"][timeframe] = Klines.from_arrays(
                series.open_time[start : start + CANDLES],
                series.open[start : start + CANDLES],
                series.high[start : start + CANDLES],
                series.low[start : start + CANDLES],
                series.close[start : start + CANDLES],
                series.volume[start : start + CANDLES],
            )
    return out


async def sweep(
    runner: SignalRunner, programs: list[SignalProgram], data: dict[str, dict[str, Klines]]
) -> tuple[float, int]:
    started = time.perf_counter()
    with KlineSnapshot(data) as snapshot:
        results = await asyncio.gather(*(runner.evaluate(p, list(data), snapshot) for p in programs))
    elapsed_ms = (time.perf_counter() - started) * 1000
    if any(result.errors for result in results):
        raise AssertionError(f"a benchmark strategy failed: {next(r.errors for r in results if r.errors)}")
    return elapsed_ms, sum(result.checked for result in results)


async def process_start() -> list[Measurement]:
    """One sandbox process: exec to READY (its imports: numpy, TA-Lib, the compiler) and its RSS then."""
    start_ms, rss_mb = [], []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        process = await SandboxProcess.start(SandboxConfig())
        start_ms.append((time.perf_counter() - started) * 1000)
        rss_mb.append(process.rss_mb())
        await process.terminate()
    return [
        Measurement(
            "sandbox process start to READY", statistics.median(start_ms), "ms", f"median of {ROUNDS}"
        ),
        Measurement("sandbox process RSS when ready", statistics.median(rss_mb), "MB", f"median of {ROUNDS}"),
    ]


async def measure() -> list[Measurement]:
    recordings = {timeframe: load(*source) for timeframe, source in SOURCES.items()}
    results = await process_start()

    compile_ms = []
    for index in range(40):
        code = helper_strategy(index) if index % 2 else generated_strategy(index)
        started = time.perf_counter()
        compile_signal(code, trader_id=f"t{index}", version=1)
        compile_ms.append((time.perf_counter() - started) * 1000)
    results.append(
        Measurement("compile one trader's code", statistics.median(compile_ms), "ms", "median of 40")
    )

    async with SandboxPool(SandboxConfig(processes=2)) as pool:
        runner = SignalRunner(pool)
        for label, make, target_ms in (
            ("helper strategies", helper_strategy, 60),
            ("stand-in generated", generated_strategy, 120),
        ):
            programs = [compile_signal(make(i), trader_id=f"{label}-{i}", version=1) for i in range(20)]
            await sweep(runner, programs, market(100, 99, recordings))  # warm the processes
            timings = [(await sweep(runner, programs, market(100, r, recordings)))[0] for r in range(ROUNDS)]
            results.append(
                Measurement(
                    f"sweep 20 traders x 100 symbols x 3 tf, {label}",
                    statistics.median(timings),
                    "ms",
                    f"median of {ROUNDS}; 2000 checks, {len({p.key for p in programs})} distinct programs;"
                    f" target <= {target_ms} ms",
                )
            )
            if label == "helper strategies":
                stats = pool.stats()
                results.append(
                    Measurement("sandbox pool RSS (2 processes)", stats.rss_mb, "MB", "after 20 x 100")
                )
                worker_mb = resident_memory_mb()
                results.append(
                    Measurement("worker process RSS (this bench)", worker_mb, "MB", "after 20 x 100")
                )
                results.append(
                    Measurement(
                        "bench + sandbox RSS",
                        worker_mb + stats.rss_mb,
                        "MB",
                        "a real worker: bench_worker_memory",
                    )
                )
        for distinct in (False, True):
            big = [
                compile_signal(helper_strategy(i, distinct=distinct), trader_id=f"big-{i}", version=1)
                for i in range(100)
            ]
            await sweep(runner, big, market(200, 98, recordings))
            timings = [(await sweep(runner, big, market(200, r, recordings)))[0] for r in range(3)]
            results.append(
                Measurement(
                    "sweep 100 traders x 200 symbols x 3 tf, helper strategies"
                    + (", every program distinct" if distinct else ""),
                    statistics.median(timings),
                    "ms",
                    f"median of 3; 20000 checks, {len({p.key for p in big})} programs; target <= 250 ms",
                )
            )
        trivial = [
            compile_signal("def check_signal(symbol, ticker, klines):\n    return True\n", trader_id="t")
        ]
        data = market(100, 0, recordings)
        with KlineSnapshot(data) as snapshot:
            await runner.evaluate(trivial[0], list(data), snapshot)
            per_check = []
            for _ in range(20):
                started = time.perf_counter()
                await runner.evaluate(trivial[0], list(data), snapshot)
                per_check.append((time.perf_counter() - started) * 1e6 / len(data))
        results.append(
            Measurement(
                "overhead per check (return True)", statistics.median(per_check), "us", "100-symbol batch"
            )
        )
        publish_ms = []
        for r in range(5):
            data = market(100, r, recordings)
            started = time.perf_counter()
            KlineSnapshot(data).close()
            publish_ms.append((time.perf_counter() - started) * 1000)
        results.append(
            Measurement(
                "publish a snapshot (100 x 3 x 1000)", statistics.median(publish_ms), "ms", "median of 5"
            )
        )
    return results


def run() -> list[Measurement]:
    return asyncio.run(measure())
