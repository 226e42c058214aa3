"""The worker as the app builds it (`worker.app.build_worker`): venue choice, recovery at start, and the
feed's ticker store driving the position monitor to a close (no poll in between)."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import uuid
from decimal import Decimal
from typing import Any

import psycopg

from devstack.keys import ANON_KEY
from tests.factories import create_machine, create_trader, create_user, ticker
from tests.worker.db.helpers import machine_tables
from tests.worker.trading.helpers import decision, set_risk
from worker.app import build_worker, choose_venue
from worker.domain.enums import AnalysisDecision, TradingMode
from worker.domain.signal import SignalContext
from worker.settings import load_settings
from worker.trading.binance_venue import BinanceVenue
from worker.trading.config import TradingConfig
from worker.trading.venue import PaperVenue

MACHINE_ID = f"m-app-{uuid.uuid4().hex[:8]}"  # machine ids are unique across users and runs


def settings_for(user: Any, machine_id: str = MACHINE_ID, **extra: str) -> Any:
    return load_settings(
        {
            "USER_ID": str(user.id),
            "MACHINE_ID": machine_id,
            "SUPABASE_URL": "http://127.0.0.1:54321",
            "SUPABASE_ANON_KEY": ANON_KEY,
            "MACHINE_TOKEN": user.machine_jwt(machine_id),
            "MACHINE_API_SECRET": "x" * 32,
            "TRADING_PAPER_SLIPPAGE_RATE": "0",
            **extra,
        }
    )


async def test_real_trading_needs_the_flag_the_keys_and_the_users_consent(
    db: psycopg.Connection[Any],
) -> None:
    user = create_user(db)
    config = TradingConfig()
    keys = {"BINANCE_API_KEY": "k" * 16, "BINANCE_API_SECRET": "s" * 16}
    cases = [
        ({}, {"real_trading_enabled": True}, "PAPER_TRADING_ONLY is set"),
        (
            {"PAPER_TRADING_ONLY": "false"},
            {"real_trading_enabled": True},
            "no Binance API keys are configured",
        ),
        (
            {"PAPER_TRADING_ONLY": "false", **keys},
            {"real_trading_enabled": False},
            "the user has not enabled real trading",
        ),
    ]
    async with machine_tables(user.machine_jwt(create_machine(db, user)), user.id) as tables:
        for env, row, reason in cases:
            venue, why = choose_venue(settings_for(user, **env), row["real_trading_enabled"], config, tables)
            assert isinstance(venue, PaperVenue) and why == reason
        venue, why = choose_venue(
            settings_for(user, PAPER_TRADING_ONLY="false", **keys), True, config, tables
        )
    assert isinstance(venue, BinanceVenue) and venue.mode is TradingMode.REAL


async def test_built_system_recovers_and_closes_on_a_ticker_update(db: psycopg.Connection[Any]) -> None:
    user = create_user(db)
    trader_id = create_trader(db, user)
    trader = set_risk(db, trader_id, 500, 3, 500)
    signal_id = db.execute(
        "insert into signals (trader_id, user_id, symbol, trigger_price)"
        " values (%s, %s, 'BTCUSDT', 40000) returning id",
        (trader_id, user.id),
    ).fetchone()[0]  # type: ignore[index]
    db.execute(
        "insert into public.fly_machines (user_id, machine_id, status) values (%s, %s, 'starting')",
        (user.id, MACHINE_ID),
    )
    async with contextlib.AsyncExitStack() as stack:
        worker = await build_worker(settings_for(user), stack)
        system = worker.trading
        assert system.venue.mode is TradingMode.PAPER and worker.venue_reason == "PAPER_TRADING_ONLY is set"
        worker.market.tickers.update(ticker("BTCUSDT", "40000", 1))
        report = await system.recovery.run()
        assert report.open_positions == 0
        context = SignalContext(signal_id, trader, "BTCUSDT", Decimal(40000), Decimal(40000), signal_id)
        await system.executor.execute(
            context, decision(AnalysisDecision.OPEN_LONG, stop_loss="39000", take_profit="42000")
        )
        assert system.monitor.watched() == 1
        monitor = asyncio.create_task(system.guard.run())
        try:
            worker.market.tickers.update(
                ticker("BTCUSDT", "38999.5", 2)
            )  # through the stop: the listener queues the exit
            for _ in range(200):
                if not len(system.positions):
                    break
                await asyncio.sleep(0.01)
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
    row = db.execute(
        "select status, close_reason, exit_price from positions where signal_id = %s", (signal_id,)
    ).fetchone()
    assert row == ("closed", "stop_loss", Decimal("38999.5"))


def test_the_path_to_health_leaves_out_what_is_needed_later() -> None:
    """`python -m worker` imports neither aiohttp (the HTTP API is served by h11, which httpx loads anyway)
    nor what runs only after /health answers (Realtime's client, jsonschema): those load on first use."""
    names = sorted({"aiohttp", "realtime", "jsonschema"})
    probe = f"import sys, worker.__main__; print(sorted(set({names!r}) & set(sys.modules)))"

    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)

    assert loaded.stdout.strip() == "[]"


def test_the_worker_does_not_load_http2() -> None:
    """httpcore loads h2 (1.2 MB) whenever it is installed; the worker's clients speak HTTP/1.1 only."""
    probe = (
        "import sys, worker.__main__, httpx, httpcore\n"
        "transport = httpx.HTTPTransport()\n"
        "print(sys.modules['h2'] is None, 'hpack' in sys.modules)"
    )

    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)

    assert loaded.stdout.split() == ["True", "False"]
