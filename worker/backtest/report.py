"""What a backtest came to: its trades, win rate, net PnL after fees, drawdown, Sharpe, exposure, per symbol.

Computed from the backtest's own rows (worker/backtest/store.py) and the equity it sampled at every moment
it visited (each fill, each moment a position was open, each check): money stays exact (Decimal) up to
the ratios.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from worker.backtest.store import MemoryTables, PositionRecord
from worker.domain import ledger
from worker.domain.enums import OrderStatus
from worker.domain.money import ZERO, exact, plain

DAY_MS: Final = 86_400_000
DAYS_PER_YEAR: Final = 365  # crypto trades every day


@dataclass(frozen=True, slots=True)
class TradeRow:
    """One position from entry to exit (or to the end of the backtest, still open)."""

    symbol: str
    side: str
    opened_at: datetime
    entry_price: Decimal
    size: Decimal
    closed_at: datetime | None
    exit_price: Decimal | None
    close_reason: str | None
    fees_usd: Decimal
    pnl_usd: Decimal  # net of fees; an open position marked at the last price
    pnl_percent: Decimal

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        for key, value in body.items():
            if isinstance(value, Decimal):
                body[key] = plain(value)
            elif isinstance(value, datetime):
                body[key] = value.isoformat()
        return body


@dataclass(frozen=True, slots=True)
class SymbolRow:
    symbol: str
    trades: int
    wins: int
    pnl_usd: Decimal
    fees_usd: Decimal

    @property
    def win_rate(self) -> float | None:
        return self.wins / self.trades if self.trades else None


@dataclass(frozen=True, slots=True)
class Fill:
    symbol: str
    at_ms: int
    price: Decimal
    kind: str  # "long entry", "short entry" or "exit", as the demo's chart marks them


@dataclass(frozen=True)
class BacktestReport:
    trader_name: str
    symbols: tuple[str, ...]
    start_ms: int
    end_ms: int
    ai: str
    fee_rate: Decimal
    slippage_rate: Decimal
    starting_balance_usd: Decimal
    final_equity_usd: Decimal
    trades: list[TradeRow]
    fills: list[Fill]
    per_symbol: list[SymbolRow]
    signals: int
    analyses: int
    decisions: dict[str, int]
    max_drawdown_usd: Decimal
    max_drawdown_percent: Decimal
    sharpe: float | None  # daily returns of the equity, annualised over 365 days
    exposure: float  # share of the time at least one position was open
    equity: list[tuple[int, Decimal]] = field(repr=False)
    moments: int = 0
    check_moments: int = 0
    elapsed_secs: float = 0.0

    @property
    def closed(self) -> list[TradeRow]:
        return [trade for trade in self.trades if trade.closed_at is not None]

    @property
    def win_rate(self) -> float | None:
        closed = self.closed
        return sum(1 for t in closed if t.pnl_usd > 0) / len(closed) if closed else None

    @property
    def net_pnl_usd(self) -> Decimal:
        with exact():
            return self.final_equity_usd - self.starting_balance_usd

    @property
    def fees_usd(self) -> Decimal:
        with exact():
            return sum((trade.fees_usd for trade in self.trades), ZERO)

    def as_json(self) -> dict[str, Any]:
        """The report as JSON (money as decimal strings)."""
        return {
            "trader": self.trader_name,
            "symbols": list(self.symbols),
            "from": _iso(self.start_ms),
            "to": _iso(self.end_ms),
            "ai": self.ai,
            "fee_rate": plain(self.fee_rate),
            "slippage_rate": plain(self.slippage_rate),
            "starting_balance_usd": plain(self.starting_balance_usd),
            "final_equity_usd": plain(self.final_equity_usd),
            "net_pnl_usd": plain(self.net_pnl_usd),
            "fees_usd": plain(self.fees_usd),
            "trades": len(self.trades),
            "closed_trades": len(self.closed),
            "win_rate": self.win_rate,
            "max_drawdown_usd": plain(self.max_drawdown_usd),
            "max_drawdown_percent": plain(self.max_drawdown_percent),
            "sharpe": self.sharpe,
            "exposure": self.exposure,
            "signals": self.signals,
            "analyses": self.analyses,
            "decisions": self.decisions,
            "moments": self.moments,
            "check_moments": self.check_moments,
            "elapsed_secs": round(self.elapsed_secs, 3),
            "per_symbol": [
                {
                    "symbol": row.symbol,
                    "trades": row.trades,
                    "wins": row.wins,
                    "win_rate": row.win_rate,
                    "pnl_usd": plain(row.pnl_usd),
                    "fees_usd": plain(row.fees_usd),
                }
                for row in self.per_symbol
            ],
            "trade_list": [trade.as_json() for trade in self.trades],
        }


def _iso(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).isoformat()


def trade_rows(tables: MemoryTables, marks: dict[str, Decimal]) -> list[TradeRow]:
    rows = []
    for record in sorted(tables.trading.positions.values(), key=lambda r: r.opened_at):
        rows.append(_trade(record, marks.get(record.position.symbol)))
    return rows


def _trade(record: PositionRecord, mark: Decimal | None) -> TradeRow:
    position = record.position
    book = position.book
    with exact():
        entry_price = book.entry_cost_total / record.entered if record.entered > 0 else book.entry_price
    pnl = ledger.net_pnl(book, None if record.closed_at else mark)
    return TradeRow(
        symbol=position.symbol,
        side=position.side.value,
        opened_at=record.opened_at,
        entry_price=entry_price.quantize(Decimal("1e-8")),
        size=record.entered,
        closed_at=record.closed_at,
        exit_price=record.exit_price,
        close_reason=record.close_reason.value if record.close_reason else None,
        fees_usd=book.fees_paid,
        pnl_usd=pnl,
        pnl_percent=ledger.pnl_percent(book, None if record.closed_at else mark),
    )


def fills(tables: MemoryTables) -> list[Fill]:
    sides = {record.position.id: record.position.side.value for record in tables.trading.positions.values()}
    opening = {"long": "BUY", "short": "SELL"}
    found = []
    for order in tables.trading.orders.values():
        if order.status is not OrderStatus.FILLED or order.position_id is None or order.price is None:
            continue
        side = sides.get(order.position_id)
        if side is None or order.executed_at is None:
            continue
        kind = f"{side} entry" if order.side.value == opening[side] else "exit"
        found.append(Fill(order.symbol, int(order.executed_at.timestamp() * 1000), order.price, kind))
    return sorted(found, key=lambda fill: fill.at_ms)


def per_symbol(trades: Sequence[TradeRow], symbols: Sequence[str]) -> list[SymbolRow]:
    rows = []
    for symbol in symbols:
        mine = [trade for trade in trades if trade.symbol == symbol]
        with exact():
            pnl = sum((trade.pnl_usd for trade in mine), ZERO)
            fees = sum((trade.fees_usd for trade in mine), ZERO)
        rows.append(SymbolRow(symbol, len(mine), sum(1 for t in mine if t.pnl_usd > 0), pnl, fees))
    return rows


def drawdown(equity: Sequence[tuple[int, Decimal]]) -> tuple[Decimal, Decimal]:
    """The largest fall from a peak: in USD, and in percent of that peak."""
    peak = worst = worst_percent = ZERO
    for _, value in equity:
        peak = max(peak, value)
        with exact():
            fall = peak - value
        if fall > worst:
            worst = fall
            with exact():
                worst_percent = fall * 100 / peak if peak > 0 else ZERO
    return worst, worst_percent.quantize(Decimal("0.01"))


def sharpe(equity: Sequence[tuple[int, Decimal]]) -> float | None:
    """Annualised Sharpe ratio of the daily returns (equity at each UTC midnight; no risk-free rate)."""
    if not equity:
        return None
    closes: list[float] = []
    day = equity[0][0] // DAY_MS
    last = float(equity[0][1])
    closes.append(last)
    for at_ms, value in equity:
        while at_ms // DAY_MS > day:
            closes.append(last)  # the equity carried into each new day
            day += 1
        last = float(value)
    closes.append(last)
    returns = [b / a - 1 for a, b in itertools.pairwise(closes) if a > 0]
    if len(returns) < 2:
        return None
    deviation = statistics.stdev(returns)
    if deviation == 0:
        return None
    return statistics.fmean(returns) / deviation * math.sqrt(DAYS_PER_YEAR)
