"""Our backtest against freqtrade's `backtesting` on the same recorded candles: both wall times (each run one
whole backtest; three runs of each, alternated, medians) and both trade lists.

The strategy is the same on both sides, with signals only: enter BTCUSDT long when RSI(14) of the closed 1h
candles is below 30, one position at a time, 100 USDT per position, leave at a 2% stop or a 4% target, 10 bps
fee per fill, no slippage; over the whole hourly recording (2021-04 .. 2023-12, 23,987 candles). Ours is the
worker's own backtest (worker/backtest: sandbox, signal engine, executor, paper venue, monitor) with the AI
off; freqtrade (the PyPI package, version FREQTRADE, in its own virtualenv under .devstack/, never imported by
our code) runs a strategy class in the same process as its timer. `make bench-setup` (which `make bench` runs
first) installs it: `python -m bench.bench_backtest install`; the benchmark itself downloads nothing.

Freqtrade loads the exchange's markets at start-up; it is pointed at the local stack's exchange simulator
(whose exchangeInfo follows Binance's), so the run needs the stack and no network.

How the two should differ, and why (the comparison prints every difference it finds):
- Targets: freqtrade's ROI is a profit ratio after both fees; its `minimal_roi` is set to the ratio that a
  4% price move gives after fees, so both exit at the same price.
- Exit time: freqtrade stamps an exit with the open of the candle it happened in; ours has the millisecond on
  the candle path, so exits are compared by candle.
- A candle that reaches both the stop and the target: freqtrade assumes the stop came first; ours walks the
  path (open, low, high, close when the candle closes up; open, high, low, close when it closes down).
- The candle an entry fills in: freqtrade exits there by ROI only if the candle's close says so (its rule
  against using the high before the entry); ours follows the path from the entry on.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from bench.measurement import Measurement
from devstack.config import EXCHANGE_PORT, REPO_ROOT
from devstack.exchange.data import default_data_dir
from worker.backtest.analysts import DefaultLevels
from worker.backtest.run import BacktestSpec, run_backtest
from worker.domain.enums import TraderStatus
from worker.domain.trader import Trader, TraderRisk
from worker.market.recordings import VOLUME_SCALE, SymbolData, load_csv
from worker.sandbox import SandboxConfig, SandboxPool

NEEDS_STACK = True
ROUNDS = 3  # runs of each side; the walls are medians (each run is one whole backtest)
FREQTRADE = "2026.9"
FREQTRADE_VENV = REPO_ROOT / ".devstack" / f"freqtrade-{FREQTRADE}"
FREQTRADE_INSTALLED = FREQTRADE_VENV / ".installed"
HOUR_MS = 3_600_000
FEE = Decimal("0.001")
STOP, TARGET = Decimal(2), Decimal(4)  # percent
STAKE_USD = 100
SIGNAL_CODE = """def check_signal(symbol, ticker, klines):
    k = klines["1h"]
    if len(get_closes(k)) < 15:
        return False
    return get_latest_rsi(k, 14) < 30
"""
FREQTRADE_STRATEGY = """
import talib.abstract as ta
from freqtrade.strategy import IStrategy


class RsiDip(IStrategy):
    timeframe = "1h"
    minimal_roi = {"0": ROI}
    stoploss = -STOP
    startup_candle_count = 15
    process_only_new_candles = True

    def populate_indicators(self, df, metadata):
        df["rsi"] = ta.RSI(df, timeperiod=14)
        return df

    def populate_entry_trend(self, df, metadata):
        df.loc[df["rsi"] < 30, "enter_long"] = 1
        return df

    def populate_exit_trend(self, df, metadata):
        return df
"""
# Runs in freqtrade's virtualenv: times its backtesting command in-process, writes the trades as JSON.
FREQTRADE_RUNNER = """
import json, sys, time
from pathlib import Path
from freqtrade.main import main
from freqtrade.data.btanalysis import load_backtest_data

config, results, out = sys.argv[1:4]
started = time.perf_counter()
try:
    main(["backtesting", "-c", config, "--export", "trades", "--backtest-directory", results])
except SystemExit as stop:
    if stop.code:
        raise
elapsed = time.perf_counter() - started
trades = load_backtest_data(Path(results))
rows = [
    {"open_ms": int(t.open_date.timestamp() * 1000), "close_ms": int(t.close_date.timestamp() * 1000),
     "open_rate": float(t.open_rate), "close_rate": float(t.close_rate), "reason": str(t.exit_reason),
     "profit_usd": float(t.profit_abs)}
    for t in trades.itertuples()
]
Path(out).write_text(json.dumps({"elapsed_secs": elapsed, "trades": rows}))
"""


@dataclass(frozen=True)
class Trade:
    entry_hour_ms: int  # the open of the candle the entry filled at
    exit_hour_ms: int  # the open of the candle the exit happened in
    entry_price: float
    exit_price: float
    reason: str  # stop_loss | take_profit (| still open)


def _roi() -> Decimal:
    """freqtrade's ROI ratio (after fees) for a TARGET% price move."""
    return (1 + TARGET / 100) * (1 - FEE) / (1 + FEE) - 1


class FreqtradeMissing(RuntimeError):
    """freqtrade's virtualenv is not installed (or its install did not finish)."""


def install_freqtrade() -> None:
    """The install step (make bench-setup): freqtrade FREQTRADE from PyPI into its own virtualenv, once."""
    if FREQTRADE_INSTALLED.exists():
        return
    print(f"installing freqtrade {FREQTRADE} into {FREQTRADE_VENV}", file=sys.stderr)
    python = FREQTRADE_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(FREQTRADE_VENV)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"freqtrade=={FREQTRADE}"],
        check=True,
        stdout=sys.stderr,
    )
    FREQTRADE_INSTALLED.touch()  # only a finished install counts


def freqtrade_python() -> Path:
    """The installed freqtrade's interpreter (raises FreqtradeMissing: the benchmark installs nothing)."""
    if not FREQTRADE_INSTALLED.exists():
        raise FreqtradeMissing(
            f"freqtrade {FREQTRADE} is not installed in {FREQTRADE_VENV}: run make bench-setup"
        )
    return FREQTRADE_VENV / "bin" / "python"


def hourly() -> dict[str, SymbolData]:
    candles = load_csv(default_data_dir() / "BTCUSDT-1h.csv", HOUR_MS)
    return {"BTCUSDT": SymbolData.build("BTCUSDT", {HOUR_MS: candles})}


async def ours(recordings: dict[str, SymbolData]) -> tuple[float, list[Trade]]:
    trader = Trader(
        id=uuid.uuid4(), user_id=uuid.uuid4(), name="RSI dip", signal_code=SIGNAL_CODE, signal_code_version=1,
        ai_instructions="", timeframes=("1h",), check_interval="1h_close", reanalysis_interval="1h_close",
        symbols=("BTCUSDT",), risk=TraderRisk(Decimal(STAKE_USD), 1, Decimal(1_000_000)),
        status=TraderStatus.ACTIVE, error_message=None, updated_at=datetime.now(UTC),
        stop_loss_percent=STOP, take_profit_percent=TARGET,
    )  # fmt: skip
    tape = recordings["BTCUSDT"].tape
    spec = BacktestSpec(trader, ("BTCUSDT",), int(tape.open_time[0]), tape.end_ms, FEE, Decimal(0))
    started = time.perf_counter()
    async with SandboxPool(SandboxConfig()) as pool:
        report = await run_backtest(
            spec, recordings, pool=pool, analyst=lambda tables, _clock: DefaultLevels(trader, tables)
        )
    elapsed = time.perf_counter() - started
    trades = [
        Trade(
            _hour(int(t.opened_at.timestamp() * 1000)),
            _hour(int(t.closed_at.timestamp() * 1000)) if t.closed_at else -1,
            float(t.entry_price),
            float(t.exit_price or 0),
            t.close_reason or "open",
        )
        for t in report.trades
    ]
    return elapsed, trades


def theirs(python: Path, recordings: dict[str, SymbolData], workdir: Path) -> tuple[float, list[Trade]]:
    data = workdir / "data" / "binance"
    data.mkdir(parents=True)
    candles = recordings["BTCUSDT"].files[HOUR_MS]
    rows = [
        [int(t), float(o), float(h), float(lo), float(c), v / VOLUME_SCALE]
        for t, o, h, lo, c, v in zip(
            candles.open_time,
            candles.open,
            candles.high,
            candles.low,
            candles.close,
            candles.volume_units,
            strict=True,
        )
    ]
    (data / "BTC_USDT-1h.json").write_text(json.dumps(rows))
    strategies = workdir / "strategies"
    strategies.mkdir()
    (strategies / "rsi_dip.py").write_text(
        FREQTRADE_STRATEGY.replace("ROI", str(_roi())).replace("STOP", str(STOP / 100))
    )
    exchange_api = f"http://127.0.0.1:{EXCHANGE_PORT}/api/v3"
    ccxt = {
        "urls": {"api": {"public": exchange_api, "private": exchange_api}},
        "options": {
            "fetchMarkets": {"types": ["spot"]},
            "fetchCurrencies": False,
        },  # spot only: what it serves
    }
    config = {
        "max_open_trades": 1, "stake_currency": "USDT", "stake_amount": STAKE_USD, "dry_run": True,
        "dry_run_wallet": 10_000, "timeframe": "1h", "fee": float(FEE), "trading_mode": "spot",
        "dataformat_ohlcv": "json", "user_data_dir": str(workdir), "datadir": str(data),
        "strategy": "RsiDip", "strategy_path": str(strategies),
        "exchange": {"name": "binance", "key": "", "secret": "", "pair_whitelist": ["BTC/USDT"],
                     "ccxt_config": ccxt, "ccxt_async_config": ccxt},
        "pairlists": [{"method": "StaticPairList"}],
        "entry_pricing": {"price_side": "same"}, "exit_pricing": {"price_side": "same"},
    }  # fmt: skip
    (workdir / "config.json").write_text(json.dumps(config))
    (workdir / "results").mkdir()
    (workdir / "runner.py").write_text(textwrap.dedent(FREQTRADE_RUNNER))
    out = workdir / "trades.json"
    arguments = [workdir / "runner.py", workdir / "config.json", workdir / "results", out]
    log = workdir / "freqtrade.log"
    with log.open("w") as output:
        finished = subprocess.run(
            [str(python), *map(str, arguments)], cwd=workdir, stdout=output, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": ""}, check=False,
        )  # fmt: skip
    if finished.returncode:
        raise RuntimeError(f"freqtrade failed ({finished.returncode}): {log.read_text()[-2000:]}")
    answer = json.loads(out.read_text())
    reasons = {"stop_loss": "stop_loss", "roi": "take_profit"}
    trades = [
        Trade(
            _hour(t["open_ms"]),
            _hour(t["close_ms"]),
            t["open_rate"],
            t["close_rate"],
            reasons.get(t["reason"], t["reason"]),
        )
        for t in answer["trades"]
    ]
    return float(answer["elapsed_secs"]), trades


def _hour(at_ms: int) -> int:
    return at_ms // HOUR_MS * HOUR_MS


def _when(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


@dataclass(frozen=True)
class Comparison:
    same_entries: int
    same_exits: int
    worst_price_gap: float  # the largest relative difference of an entry or exit price among the same trades
    differences: list[str]


def compare(mine: list[Trade], other: list[Trade]) -> Comparison:
    """Entries at the same candle, and of those the exits at the same candle for the same reason; a line
    for each difference."""
    by_entry = {trade.entry_hour_ms: trade for trade in other}
    same_entries = same_exits = 0
    worst = 0.0
    lines = []
    for trade in mine:
        match = by_entry.get(trade.entry_hour_ms)
        if match is None:
            lines.append(f"ours only: entry {_when(trade.entry_hour_ms)} ({trade.reason})")
            continue
        same_entries += 1
        if (match.exit_hour_ms, match.reason) == (trade.exit_hour_ms, trade.reason):
            same_exits += 1
            for ours_price, their_price in (
                (trade.entry_price, match.entry_price),
                (trade.exit_price, match.exit_price),
            ):
                worst = max(worst, abs(ours_price - their_price) / their_price)
        else:
            lines.append(
                f"entry {_when(trade.entry_hour_ms)}: ours {trade.reason} {_when(trade.exit_hour_ms)} at "
                f"{trade.exit_price:.2f}, freqtrade {match.reason} {_when(match.exit_hour_ms)} at "
                f"{match.exit_price:.2f}"
            )
    mine_entries = {trade.entry_hour_ms for trade in mine}
    lines += [
        f"freqtrade only: entry {_when(t.entry_hour_ms)} ({t.reason})"
        for t in other
        if t.entry_hour_ms not in mine_entries
    ]
    return Comparison(same_entries, same_exits, worst, lines)


def run() -> list[Measurement]:
    python = freqtrade_python()
    recordings = hourly()
    ours_secs: list[float] = []
    theirs_secs: list[float] = []
    for _ in range(ROUNDS):  # alternated, so a busy moment of the machine slows both sides alike
        elapsed, mine = asyncio.run(ours(recordings))
        ours_secs.append(elapsed)
        with tempfile.TemporaryDirectory(prefix="bench-freqtrade-") as workdir:
            elapsed, other = theirs(python, recordings, Path(workdir))
        theirs_secs.append(elapsed)
    our_secs, their_secs = statistics.median(ours_secs), statistics.median(theirs_secs)
    found = compare(mine, other)
    print(f"  ours: {len(mine)} trades; freqtrade: {len(other)} trades", file=sys.stderr)
    for line in found.differences:
        print(f"  {line}", file=sys.stderr)
    return [
        Measurement(
            "ours wall (whole hourly history)", our_secs, "s", f"median of {ROUNDS}; {len(mine)} trades"
        ),
        Measurement("freqtrade wall (same)", their_secs, "s", f"median of {ROUNDS}; freqtrade {FREQTRADE}"),
        Measurement("ours / freqtrade wall", our_secs / their_secs, "ratio", "target <= 1"),
        Measurement(
            "same entries", found.same_entries, "trades", f"of {len(mine)} ours, {len(other)} freqtrade's"
        ),
        Measurement(
            "same exits (candle and reason)",
            found.same_exits,
            "trades",
            f"of {found.same_entries} same entries",
        ),
        Measurement(
            "worst price gap in those", found.worst_price_gap * 100, "%", "entry or exit price, relative"
        ),
    ]


if __name__ == "__main__":
    if sys.argv[1:] != ["install"]:
        sys.exit("usage: python -m bench.bench_backtest install")
    install_freqtrade()
