"""The demo's summary, computed from the user's rows (signals, analyses, trades, positions) read via the API.

Before anything is printed, every closed position is checked against its own trades (its PnL must equal
sells minus buys minus fees, its realised PnL the sum of its fills'); a mismatch is an error, not a table.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from rich.table import Table

ZERO = Decimal(0)


class InconsistentSummary(Exception):
    """The database disagrees with itself (a position's PnL is not what its trades imply)."""


@dataclass(frozen=True, slots=True)
class EquityPoint:
    at: datetime
    equity_usd: Decimal


@dataclass(frozen=True, slots=True)
class Summary:
    """What the demo reports at the end (money in USDT, exact)."""

    signals: int
    decisions: dict[str, int]
    trades_filled: int
    trades_failed: int
    closed_positions: int
    open_positions: int
    winning_positions: int
    realized_pnl_usd: Decimal
    unrealized_pnl_usd: Decimal
    fees_usd: Decimal
    starting_balance_usd: Decimal
    max_drawdown_usd: Decimal
    equity: list[EquityPoint] = field(default_factory=list)

    @property
    def win_rate(self) -> Decimal | None:
        if not self.closed_positions:
            return None
        return Decimal(self.winning_positions) / Decimal(self.closed_positions)

    @property
    def pnl_usd(self) -> Decimal:
        return self.realized_pnl_usd + self.unrealized_pnl_usd

    @property
    def max_drawdown_percent(self) -> Decimal:
        peak = max((point.equity_usd for point in self.equity), default=self.starting_balance_usd)
        return self.max_drawdown_usd * 100 / peak if peak > 0 else ZERO

    def as_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["equity"] = [{"at": p.at.isoformat(), "equity_usd": str(p.equity_usd)} for p in self.equity]
        body["win_rate"] = None if self.win_rate is None else str(self.win_rate)
        body["pnl_usd"] = str(self.pnl_usd)
        encoded: dict[str, Any] = json.loads(json.dumps(body, default=str))
        return encoded


def _decimal(value: Any) -> Decimal:
    return Decimal(str(value)) if value is not None else ZERO


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def implied_pnl_usd(trades: list[dict[str, Any]]) -> Decimal:
    """A position's net PnL from its filled trades: sells brought in, less what buys cost and fees."""
    total = ZERO
    for trade in trades:
        notional = _decimal(trade["price"]) * _decimal(trade["quantity"])
        total += notional if trade["side"] == "SELL" else -notional
        total -= _decimal(trade["fee"])
    return total


def check_positions(positions: list[dict[str, Any]], trades: list[dict[str, Any]]) -> None:
    """Raise InconsistentSummary unless every closed position matches its filled trades exactly."""
    filled: dict[str, list[dict[str, Any]]] = {}
    for trade in trades:
        if trade["status"] == "filled" and trade.get("position_id"):
            filled.setdefault(trade["position_id"], []).append(trade)
    for position in positions:
        if position["status"] != "closed":
            continue
        own = filled.get(position["id"], [])
        foreign_fees = {
            t.get("fee_asset") for t in own if _decimal(t["fee"]) and t.get("fee_asset") != "USDT"
        }
        if foreign_fees:
            raise InconsistentSummary(f"position {position['id']} paid fees in {foreign_fees}, not USDT")
        implied = implied_pnl_usd(own)
        if _decimal(position["pnl"]) != implied:
            raise InconsistentSummary(
                f"position {position['id']} ({position['symbol']}) records PnL {position['pnl']}, but its "
                f"{len(own)} trade(s) imply {implied}"
            )
        realized = sum((_decimal(t.get("realized_pnl")) for t in own), ZERO)
        if _decimal(position["realized_pnl"]) != realized:
            raise InconsistentSummary(
                f"position {position['id']} has realised PnL {position['realized_pnl']}, its fills {realized}"
            )


def summarise(
    *,
    signals: list[dict[str, Any]],
    analyses: list[dict[str, Any]],
    trades: list[dict[str, Any]],
    positions: list[dict[str, Any]],
    starting_balance_usd: Decimal,
    last_prices: dict[str, float],
) -> Summary:
    """The summary of the demo user's rows; open positions are marked at `last_prices`."""
    check_positions(positions, trades)
    closed = [p for p in positions if p["status"] == "closed"]
    still_open = [p for p in positions if p["status"] == "open"]
    filled = sorted((t for t in trades if t["status"] == "filled"), key=lambda t: t["executed_at"])
    unrealized = ZERO
    for position in still_open:
        price = last_prices.get(position["symbol"])
        if price is None:
            continue
        sign = 1 if position["side"] == "long" else -1
        cost = _decimal((position.get("metadata") or {}).get("cost_basis"))
        unrealized += (_decimal(position["size"]) * Decimal(str(price)) - cost) * sign
        unrealized += _decimal(position["realized_pnl"]) - _decimal(position["fees_paid"])
    # The equity curve moves at every fill by what it realised less its fee, and ends marked to market.
    equity = [EquityPoint(_time(filled[0]["executed_at"]), starting_balance_usd)] if filled else []
    running = starting_balance_usd
    for trade in filled:
        running += _decimal(trade.get("realized_pnl")) - _decimal(trade["fee"])
        equity.append(EquityPoint(_time(trade["executed_at"]), running))
    if still_open and equity:
        open_fees = sum((_decimal(p["fees_paid"]) for p in still_open), ZERO)
        open_realized = sum((_decimal(p["realized_pnl"]) for p in still_open), ZERO)
        # Fills of open positions are already in `running`; add only their mark-to-market part.
        marked_at = datetime.now(UTC)  # after the run: on the demo's timeline, the market's last moment
        equity.append(EquityPoint(marked_at, running + unrealized - open_realized + open_fees))
    peak, drawdown = starting_balance_usd, ZERO
    for point in equity:
        peak = max(peak, point.equity_usd)
        drawdown = max(drawdown, peak - point.equity_usd)
    return Summary(
        signals=len(signals),
        decisions=dict(Counter(a["decision"] for a in analyses).most_common()),
        trades_filled=len(filled),
        trades_failed=sum(1 for t in trades if t["status"] == "failed"),
        closed_positions=len(closed),
        open_positions=len(still_open),
        winning_positions=sum(1 for p in closed if _decimal(p["pnl"]) > 0),
        realized_pnl_usd=sum((_decimal(p["pnl"]) for p in closed), ZERO),
        unrealized_pnl_usd=unrealized,
        fees_usd=sum((_decimal(t["fee"]) for t in filled), ZERO),
        starting_balance_usd=starting_balance_usd,
        max_drawdown_usd=drawdown,
        equity=equity,
    )


def money(value: Decimal) -> str:
    return f"{value:+,.2f} USDT"


def summary_table(summary: Summary, title: str) -> Table:
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    decisions = ", ".join(f"{kind} {count}" for kind, count in summary.decisions.items()) or "none"
    win_rate = "-" if summary.win_rate is None else f"{summary.win_rate * 100:.0f}%"
    rows = [
        ("signals", str(summary.signals)),
        ("AI decisions", f"{sum(summary.decisions.values())} ({decisions})"),
        ("trades filled", f"{summary.trades_filled} ({summary.trades_failed} failed)"),
        ("closed positions", f"{summary.closed_positions} ({summary.winning_positions} won)"),
        ("open positions", str(summary.open_positions)),
        ("win rate", win_rate),
        ("realised PnL (net of fees)", money(summary.realized_pnl_usd)),
        ("unrealised PnL (open, at last price)", money(summary.unrealized_pnl_usd)),
        ("fees paid", f"{summary.fees_usd:,.2f} USDT"),
        ("max drawdown", f"{summary.max_drawdown_usd:,.2f} USDT ({summary.max_drawdown_percent:.2f}%)"),
    ]
    for label, value in rows:
        table.add_row(label, value)
    return table


def write_json(summary: Summary, path: Path, extra: dict[str, Any]) -> None:
    path.write_text(json.dumps({**extra, "summary": summary.as_json()}, indent=2) + "\n")
