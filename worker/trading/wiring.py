"""Builds the trading parts from the settings: venue (paper or Binance), store, executor, monitor,
re-analyzer; connects them to the market feed's stores and runs recovery at start."""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from worker.clock import Clock, LiveClock
from worker.components import Component, ComponentState
from worker.domain.trader import Trader
from worker.indicators import series
from worker.market.feed import MarketFeed
from worker.market.store import KlineStore
from worker.market.tickers import TickerStore
from worker.metrics import WorkerMetrics
from worker.retry import retry
from worker.settings import WorkerSettings
from worker.signals.analysis import AnalysisClient, AnalysisSettings
from worker.signals.market_data import build_market_data
from worker.trading import ledger
from worker.trading.binance_venue import BinanceVenue
from worker.trading.config import TradingConfig
from worker.trading.executor import TradeExecutor
from worker.trading.guardrails import Guardrails
from worker.trading.model import TrailingMode
from worker.trading.monitor import PositionMonitor
from worker.trading.reanalysis import TradingReanalyzer
from worker.trading.recovery import RecoveryReport, recover
from worker.trading.store import TradingStore
from worker.trading.venue import PaperVenue, Venue

logger = logging.getLogger(__name__)


def trading_config(settings: WorkerSettings) -> TradingConfig:
    """The trading slice of the worker's settings."""
    mode = settings.trading_trailing_mode
    return TradingConfig(
        paper_fee_rate=settings.trading_paper_fee_rate,
        paper_slippage_rate=settings.trading_paper_slippage_rate,
        default_balance_fraction=settings.trading_default_balance_fraction,
        symbol_cooldown_secs=settings.trading_symbol_cooldown_secs,
        safe_mode_failures=settings.trading_safe_mode_failures,
        monitor_sweep_interval_secs=settings.trading_monitor_sweep_interval_secs,
        stale_price_secs=settings.trading_stale_price_secs,
        trailing_mode=TrailingMode(mode) if mode != "off" else None,
        trailing_distance=settings.trading_trailing_distance,
        trailing_activation_fraction=settings.trading_trailing_activation_fraction,
        atr_interval=settings.trading_atr_interval,
        exchange_stop_update_secs=settings.trading_exchange_stop_update_secs,
        order_timeout_secs=settings.trading_order_timeout_secs,
    )


def choose_venue(
    settings: WorkerSettings, user_row: dict[str, Any], config: TradingConfig
) -> tuple[Venue, str]:
    """Real trading only when the user enabled it, keys are present and PAPER_TRADING_ONLY is false."""
    reason = None
    if settings.paper_trading_only:
        reason = "PAPER_TRADING_ONLY is set"
    elif settings.binance_api_key is None or settings.binance_api_secret is None:
        reason = "no Binance API keys are configured"
    elif not user_row.get("real_trading_enabled"):
        reason = "the user has not enabled real trading"
    if reason is not None:
        return PaperVenue(config.paper_fee_rate, config.paper_slippage_rate), reason
    assert settings.binance_api_key is not None and settings.binance_api_secret is not None
    venue = BinanceVenue(
        str(settings.binance_base_url),
        settings.binance_api_key.get_secret_value(),
        settings.binance_api_secret.get_secret_value(),
        request_timeout_secs=config.order_timeout_secs,
        stop_limit_buffer=config.stop_limit_buffer,
    )
    return venue, "real trading is enabled"


@dataclass
class MarketPrices:
    """Prices and ATR for the executor and monitor, read from the market feed's stores once attached."""

    config: TradingConfig
    tickers: TickerStore | None = None
    klines: KlineStore | None = None
    _atr_cache: dict[str, tuple[int, Decimal | None]] = field(default_factory=dict)

    def last_price(self, symbol: str) -> Decimal | None:
        ticker = self.tickers.get(symbol) if self.tickers is not None else None
        return ticker.last_price if ticker is not None else None

    def atr(self, symbol: str) -> Decimal | None:
        if self.klines is None:
            return None
        candles = self.klines.get(symbol, self.config.atr_interval)
        if candles is None or len(candles) <= self.config.atr_period:
            return None
        cached = self._atr_cache.get(symbol)
        if cached is not None and cached[0] == candles.version:
            return cached[1]
        view = candles.klines()
        values = series.atr(view.high, view.low, view.close, self.config.atr_period)
        latest = float(values[-1])
        atr = Decimal(repr(latest)) if math.isfinite(latest) and latest > 0 else None
        self._atr_cache[symbol] = (candles.version, atr)
        return atr

    def market_data(self, trader: Trader, symbol: str) -> tuple[dict[str, Any], Decimal] | None:
        if self.tickers is None or self.klines is None:
            return None
        ticker = self.tickers.get(symbol)
        if ticker is None:
            return None
        series_by_timeframe = {}
        for timeframe in trader.timeframes:
            klines = self.klines.klines(symbol, timeframe)
            if klines is not None:
                series_by_timeframe[timeframe] = klines
        if not series_by_timeframe:
            return None
        return build_market_data(symbol, ticker, series_by_timeframe, datetime.now(UTC)), ticker.last_price


class MonitorComponent:
    """Runs the position monitor; recovery runs first, so positions are guarded before anything else."""

    name = "position-monitor"

    def __init__(self, system: TradingSystem) -> None:
        self._system = system

    def state(self) -> ComponentState:
        if self._system.recovery is None:
            return ComponentState.STARTING
        return self._system.monitor.state()

    async def run(self) -> None:
        await self._system.monitor.run()

    async def prepare_shutdown(self) -> None:
        await self._system.monitor.prepare_shutdown()


@dataclass
class TradingSystem:
    config: TradingConfig
    venue: Venue
    mode_reason: str
    store: TradingStore
    executor: TradeExecutor
    monitor: PositionMonitor
    reanalyzer: TradingReanalyzer
    prices: MarketPrices
    recovery: RecoveryReport | None = None

    @property
    def components(self) -> list[Component]:
        return [MonitorComponent(self)]

    def attach(self, feed: MarketFeed) -> None:
        """Read prices from the feed's stores and evaluate positions on every ticker update."""
        self.prices.tickers, self.prices.klines = feed.tickers, feed.store
        feed.tickers.add_listener(self.monitor.on_ticker)

    def position_symbols(self) -> set[str]:
        """Symbols the feed must follow tickers for (every open position's)."""
        return self.monitor.symbols()

    async def recover(self, metrics: WorkerMetrics | None = None) -> RecoveryReport:
        self.recovery = await recover(self.executor)
        if metrics is not None:
            metrics.open_positions = self.recovery.open_positions
            metrics.watching_signals = self.recovery.watching_signals
        return self.recovery

    def open_positions_view(self) -> list[dict[str, Any]]:
        """The monitor's view of every open position (for /positions)."""
        view = []
        for position in self.executor.positions.values():
            price = self.prices.last_price(position.symbol)
            trailing = self.monitor.trailing_state(position.id)
            view.append(
                {
                    "id": str(position.id),
                    "signal_id": str(position.signal_id),
                    "trader_id": str(position.trader_id),
                    "symbol": position.symbol,
                    "side": position.side.value,
                    "mode": position.mode.value,
                    "size": str(position.book.size),
                    "entry_price": str(position.book.entry_price),
                    "stop_loss": _text(position.stop_loss),
                    "take_profit": _text(position.take_profit),
                    "trailing_stop": _text(trailing.stop_price if trailing else None),
                    "last_price": _text(price),
                    "unrealized_pnl": _text(ledger.unrealized_pnl(position.book, price) if price else None),
                    "pnl_percent": _text(ledger.pnl_percent(position.book, price) if price else None),
                }
            )
        return view


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


async def build_trading(
    settings: WorkerSettings,
    stack: contextlib.AsyncExitStack,
    *,
    clock: Clock | None = None,
) -> TradingSystem:
    """Choose the venue, connect it, and build the executor, monitor and re-analyzer (not yet running)."""
    clock = clock or LiveClock()
    config = trading_config(settings)
    anon_key = settings.supabase_anon_key.get_secret_value()
    token = settings.machine_token.get_secret_value()
    store = TradingStore(settings.rest_url, anon_key, token, clock=clock)
    stack.push_async_callback(store.aclose)
    venue, reason = choose_venue(settings, await store.user_row(), config)
    logger.info("trading mode=%s reason=%s", venue.mode, reason)
    await retry(venue.start, what=f"{venue.mode} venue start", clock=clock)
    stack.push_async_callback(venue.aclose)
    prices = MarketPrices(config)
    executor = TradeExecutor(store, venue, Guardrails(config), config, prices, clock=clock)
    monitor = PositionMonitor(
        config,
        executor.close_for_monitor,
        clock=clock,
        atr=prices.atr,
        record_trailing=executor.record_trailing,
        reconcile=executor.reconcile_exchange_exits if venue.supports_protection else None,
    )
    executor.watcher = monitor
    analysis = AnalysisClient(
        AnalysisSettings(
            functions_url=settings.functions_url,
            anon_key=anon_key,
            machine_token=token,
            attempt_timeout_secs=settings.analysis_attempt_timeout_secs,
            deadline_secs=settings.analysis_deadline_secs,
            max_attempts=settings.analysis_max_attempts,
        ),
        clock=clock,
    )
    stack.push_async_callback(analysis.aclose)
    reanalyzer = TradingReanalyzer(executor, analysis, prices.market_data, clock=clock)
    return TradingSystem(config, venue, reason, store, executor, monitor, reanalyzer, prices)
