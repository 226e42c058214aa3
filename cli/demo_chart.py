"""The chart of a replayed run (the demo's, a backtest's): each symbol's price with the entries and exits,
and the equity curve (PNG)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Marker:
    """One fill on the price chart, at market time."""

    market_ms: int
    price: float
    kind: str  # "long entry", "short entry" or "exit"


def markers(
    trades: list[dict[str, Any]], positions: list[dict[str, Any]], to_market_ms: Callable[[datetime], int]
) -> dict[str, list[Marker]]:
    """Per symbol: every filled trade, an entry when it opened or grew its position, else an exit."""
    sides = {p["id"]: p["side"] for p in positions}
    opening = {"long": "BUY", "short": "SELL"}
    found: dict[str, list[Marker]] = {}
    for trade in trades:
        if trade["status"] != "filled" or trade.get("price") is None:
            continue
        side = sides.get(trade.get("position_id") or "")
        if side is None:
            continue
        kind = f"{side} entry" if trade["side"] == opening[side] else "exit"
        at = to_market_ms(datetime.fromisoformat(trade["executed_at"]))
        found.setdefault(trade["symbol"], []).append(Marker(at, float(trade["price"]), kind))
    return found


_STYLES = {
    "long entry": {"marker": "^", "color": "tab:green"},
    "short entry": {"marker": "v", "color": "tab:red"},
    "exit": {"marker": "x", "color": "black"},
}


def draw(
    path: Path,
    *,
    title: str,
    prices: dict[str, list[tuple[int, float]]],
    fills: dict[str, list[Marker]],
    equity: list[tuple[int, float]],
    starting_balance_usd: float,
    equity_label: str = "paper equity (USDT)",
) -> Path:
    """Write the PNG: one price panel per symbol, then the equity curve (market ms, USD); returns `path`."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    symbols = sorted(prices)
    figure, axes = plt.subplots(
        len(symbols) + 1, 1, figsize=(12, 3.2 * (len(symbols) + 1)), sharex=True, squeeze=False
    )
    figure.suptitle(title)

    def when(market_ms: int) -> datetime:
        return datetime.fromtimestamp(market_ms / 1000, UTC)

    for axis, symbol in zip(axes[:-1, 0], symbols, strict=True):
        series = prices[symbol]
        axis.plot([when(t) for t, _ in series], [p for _, p in series], color="tab:blue", linewidth=0.9)
        for kind, style in _STYLES.items():
            points = [m for m in fills.get(symbol, []) if m.kind == kind]
            if points:
                axis.scatter(
                    [when(m.market_ms) for m in points], [m.price for m in points],
                    label=kind, s=48, zorder=3, **style,
                )  # fmt: skip
        axis.set_ylabel(f"{symbol} (USDT)")
        axis.grid(alpha=0.3)
        if fills.get(symbol):
            axis.legend(loc="upper left", fontsize="small")
    equity_axis = axes[-1, 0]
    if equity:
        curve = list(equity)
        last = max((series[-1][0] for series in prices.values() if series), default=0)
        if last and curve[-1][0] < last:
            curve.append((last, curve[-1][1]))  # hold the last level to the end of the run
        times = [when(at_ms) for at_ms, _ in curve]
        equity_axis.step(times, [value for _, value in curve], where="post", color="tab:purple")
    equity_axis.axhline(starting_balance_usd, color="grey", linestyle="--", linewidth=0.8)
    equity_axis.ticklabel_format(axis="y", useOffset=False, style="plain")
    equity_axis.set_ylabel(equity_label)
    equity_axis.grid(alpha=0.3)
    span_ms = max((series[-1][0] - series[0][0] for series in prices.values() if series), default=0)
    date_format = "%m-%d %H:%M" if span_ms <= 14 * 86_400_000 else "%Y-%m-%d"
    equity_axis.xaxis.set_major_formatter(mdates.DateFormatter(date_format, tz=UTC))  # type: ignore[no-untyped-call]
    equity_axis.set_xlabel("market time (UTC, replayed)")
    figure.autofmt_xdate()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
