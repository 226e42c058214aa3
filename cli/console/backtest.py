"""`trademind backtest`: a trader's strategy (saved, or written from a description) replayed over the recorded
market by the worker's own signal run and trading (worker/backtest), shown as a table and a chart, and saved
as a `backtests` row the console can list.

The replay runs here, in the console's process, with its own sandbox processes; the database only receives
the result (as the user: RLS applies). With `--ai standin|gemini` each signal is judged by analyze-signal's
backtest form, as the user (the calls count against their daily AI budget).
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import httpx
import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from cli.console.api import Api
from cli.console.common import api, command, emit_json, err, find_trader, out
from cli.console.errors import ConsoleError, UsageProblem
from devstack.exchange.data import default_data_dir

if TYPE_CHECKING:  # the replay's modules load only when a backtest runs (every other command starts faster)
    from worker.backtest.report import BacktestReport
    from worker.backtest.run import AnalystFactory
    from worker.domain.trader import Trader
    from worker.market.recordings import SymbolData

BPS: Final = Decimal(10_000)
DEFAULT_FEE_BPS: Final = 10.0
DEFAULT_SLIPPAGE_BPS: Final = 5.0
DEFAULT_OUTPUT: Final = Path(".devstack/backtests")
TRADER_COLUMNS: Final = (
    "id,user_id,name,status,error_message,trading_mode,symbols,timeframes,check_interval,reanalysis_interval,"
    "risk,signal_code,signal_code_version,ai_instructions,updated_at,default_stop_loss_percent,"
    "default_take_profit_percent"
)
# A new trader's risk limits (the traders.risk column default).
DEFAULT_RISK: Final = {"max_position_size_usd": 100, "max_open_positions": 3, "daily_loss_limit_usd": 50}
AI_CHOICES: Final = ("off", "standin", "gemini")
CHART_POINTS: Final = 4000  # price points per symbol on the chart
TRADES_SHOWN: Final = 20
GAP_MS: Final = 86_400_000


@dataclass(frozen=True, slots=True)
class Window:
    symbols: tuple[str, ...]
    start_ms: int
    end_ms: int


def parse_moment(text: str, option: str) -> int:
    """An ISO date or date-time (UTC unless it says otherwise) as Unix ms."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageProblem(
            f"{option} must be an ISO date or date-time (2022-01-31, 2022-01-31T12:00), not {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def parse_bps(value: float, option: str) -> Decimal:
    if not 0 <= value <= 1000:
        raise UsageProblem(f"{option} must be between 0 and 1000 basis points, not {value:g}")
    return Decimal(repr(value)) / BPS


def choose_window(
    recordings: dict[str, SymbolData], symbols: tuple[str, ...], start: str | None, end: str | None
) -> Window:
    """The symbols and the span to replay: by default, all the time every symbol has recordings for."""
    missing = [symbol for symbol in symbols if symbol not in recordings]
    if missing:
        have = ", ".join(sorted(recordings))
        raise ConsoleError(f"no recorded candles for {', '.join(missing)} (recorded: {have})")
    first = max(int(recordings[symbol].tape.open_time[0]) for symbol in symbols)
    last = min(recordings[symbol].tape.end_ms for symbol in symbols)
    start_ms = parse_moment(start, "--from") if start else first
    end_ms = parse_moment(end, "--to") if end else last
    if end_ms <= start_ms:
        raise UsageProblem("--to must come after --from")
    if start_ms >= last or end_ms <= first:
        raise ConsoleError(
            f"{_day(start_ms)}..{_day(end_ms)} is outside the recordings of {', '.join(symbols)} "
            f"({_day(first)}..{_day(last)})"
        )
    return Window(symbols, max(start_ms, first), min(end_ms, last))


def _day(at_ms: int) -> str:
    return datetime.fromtimestamp(at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def strategy_trader(client: Api, strategy: dict[str, Any]) -> Trader:
    """The trader generate-strategy's preview would become, as the worker would run it."""
    row = {
        "id": str(uuid.uuid4()),
        "user_id": client.user_id,
        "name": strategy["name"],
        "signal_code": strategy["signalCode"],
        "signal_code_version": 1,
        "ai_instructions": strategy["aiInstructions"],
        "timeframes": strategy["timeframes"],
        "check_interval": strategy["recommendedInterval"],
        "reanalysis_interval": strategy["reanalysisInterval"],
        "symbols": strategy.get("symbols"),
        "risk": DEFAULT_RISK,
        "status": "active",
        "error_message": None,
        "updated_at": datetime.now(UTC).isoformat(),
    }
    return _trader(row)


def _trader(row: dict[str, Any]) -> Trader:
    from worker.domain.trader import Trader, TraderRowError

    try:
        return Trader.from_row(row)
    except TraderRowError as error:
        raise ConsoleError(str(error)) from error


class _UserAuth(httpx.Auth):
    """The signed-in user's headers on each analyze-signal call, the session refreshed when it is about to
    expire (a long backtest outlives an access token); the refresh is a blocking call, so off the loop."""

    def __init__(self, client: Api) -> None:
        self._client = client

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers.update(await asyncio.to_thread(self._client.headers))
        yield request


def _is_loopback(url: str) -> bool:
    host = httpx.URL(url).host
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _replay(
    trader: Trader,
    window: Window,
    *,
    recordings: dict[str, SymbolData],
    fee: Decimal,
    slippage: Decimal,
    quiet: bool,
    ai: str,
    client: Api | None,
) -> BacktestReport:
    from worker.backtest.analysts import DefaultLevels, ModelAnalyst
    from worker.backtest.run import BacktestSpec, run_backtest
    from worker.sandbox import SandboxConfig, SandboxPool
    from worker.signals.analysis import AnalysisClient, AnalysisSettings

    spec = BacktestSpec(trader, window.symbols, window.start_ms, window.end_ms, fee, slippage, ai=ai)
    model: AnalysisClient | None = None
    analyst: AnalystFactory = lambda tables, _clock: DefaultLevels(trader, tables)  # noqa: E731
    if ai != "off":
        assert client is not None
        settings = AnalysisSettings(functions_url=f"{client.endpoint.url.rstrip('/')}/functions/v1")
        model = AnalysisClient(settings, _UserAuth(client))
        analyst = lambda tables, _clock: ModelAnalyst(trader, tables, model)  # noqa: E731
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(), console=err, transient=True, disable=quiet or not err.is_terminal,
    ) as bar:  # fmt: skip
        tasks: dict[str, TaskID] = {}
        labels = {"checks": "running check_signal", "trading": "trading the replay"}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(labels.get(phase, phase), total=max(total, 1))
            bar.update(tasks[phase], completed=done, total=max(total, 1))

        try:
            async with SandboxPool(SandboxConfig()) as pool:
                return await run_backtest(spec, recordings, pool=pool, analyst=analyst, progress=progress)
        finally:
            if model is not None:
                await model.aclose()


def run(
    trader: Trader,
    *,
    symbols: tuple[str, ...],
    start: str | None,
    end: str | None,
    data_dir: Path,
    fee: Decimal,
    slippage: Decimal,
    quiet: bool = False,
    ai: str = "off",
    client: Api | None = None,
) -> tuple[BacktestReport, dict[str, SymbolData]]:
    """Replay `trader` (raises ConsoleError naming what stopped it); `client` calls the model unless `ai` is
    off."""
    from worker.errors import ConfigError
    from worker.market.recordings import load_directory
    from worker.sandbox import SignalCodeError, SignalRuntimeError
    from worker.signals.analysis import AnalysisFailed

    wanted = symbols or trader.symbols
    try:
        recordings = load_directory(data_dir, set(wanted) if wanted else None)
    except FileNotFoundError as error:
        if wanted and data_dir.is_dir():
            raise ConsoleError(f"no recorded candles for {', '.join(wanted)} in {data_dir}") from error
        raise ConsoleError(f"cannot read the recordings: {error}") from error
    except ValueError as error:
        raise ConsoleError(f"cannot read the recordings: {error}") from error
    chosen = wanted or tuple(sorted(recordings))
    window = choose_window(recordings, chosen, start, end)
    try:
        report = asyncio.run(
            _replay(
                trader, window, recordings=recordings, fee=fee, slippage=slippage, quiet=quiet, ai=ai,
                client=client,
            )
        )  # fmt: skip
    except ConfigError as error:
        raise ConsoleError(str(error)) from error
    except AnalysisFailed as error:
        raise ConsoleError(f"the backtest stopped: the AI could not judge a signal: {error}") from error
    except (SignalCodeError, SignalRuntimeError) as error:
        raise ConsoleError(f"the strategy's signal code cannot run: {error}") from error
    return report, recordings


def chart(report: BacktestReport, recordings: dict[str, SymbolData], output: Path) -> Path:
    """The price of each symbol with the entries and exits, and the equity curve (PNG)."""
    from cli.demo_chart import Marker, draw

    prices: dict[str, list[tuple[int, float]]] = {}
    for symbol in report.symbols:
        tape = recordings[symbol].tape
        inside = (tape.open_time >= report.start_ms) & (tape.open_time < report.end_ms)
        times, closes = (tape.open_time + tape.interval_ms)[inside], tape.close[inside]
        step = max(1, len(times) // CHART_POINTS)
        points: list[tuple[int, float]] = []
        for at_ms, close in zip(times[::step].tolist(), closes[::step].tolist(), strict=True):
            if points and at_ms - points[-1][0] > GAP_MS:
                points.append((points[-1][0] + 1, math.nan))  # no line across a gap in the recordings
            points.append((at_ms, close))
        prices[symbol] = points
    fills: dict[str, list[Marker]] = {}
    for fill in report.fills:
        fills.setdefault(fill.symbol, []).append(Marker(fill.at_ms, float(fill.price), fill.kind))
    output.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    return draw(
        output / f"backtest-{stamp}.png",
        title=f"{report.trader_name}: backtest {_day(report.start_ms)} .. {_day(report.end_ms)} UTC",
        prices=prices,
        fills=fills,
        equity=[(at_ms, float(value)) for at_ms, value in report.equity],
        starting_balance_usd=float(report.starting_balance_usd),
        equity_label="backtest equity (USDT)",
    )


def preview(client: Api, strategy: dict[str, Any], *, quiet: bool) -> tuple[BacktestReport, Path]:
    """generate-strategy's preview backtested over everything recorded for its symbols, with the AI off and
    the default costs; shown unless `quiet`. Returns the report and its chart."""
    report, recordings = run(
        strategy_trader(client, strategy), symbols=(), start=None, end=None, data_dir=default_data_dir(),
        fee=parse_bps(DEFAULT_FEE_BPS, "fee"), slippage=parse_bps(DEFAULT_SLIPPAGE_BPS, "slippage"),
        quiet=quiet,
    )  # fmt: skip
    chart_path = chart(report, recordings, DEFAULT_OUTPUT)
    if not quiet:
        out.print("[bold]backtest[/] over the recorded history (AI off: the default 2% stop and 4% target)")
        show(report, chart_path, None)
    return report, chart_path


def save(client: Api, report: BacktestReport, trader_id: str | None) -> str:
    """The report as a `backtests` row of the user; its id."""
    body = report.as_json()
    row = {
        "trader_id": trader_id,
        "trader_name": report.trader_name[:100],
        "symbols": list(report.symbols),
        "market_from": body["from"],
        "market_to": body["to"],
        "ai": report.ai,
        "fee_rate": body["fee_rate"],
        "slippage_rate": body["slippage_rate"],
        "starting_balance_usd": body["starting_balance_usd"],
        "final_equity_usd": body["final_equity_usd"],
        "net_pnl_usd": body["net_pnl_usd"],
        "trades": len(report.trades),
        "win_rate": report.win_rate,
        "max_drawdown_percent": body["max_drawdown_percent"],
        "sharpe": report.sharpe,
        "exposure": report.exposure,
        "report": body,
    }
    saved = client.write("POST", "backtests", body=row, params={"select": "id"}, what="saving the backtest")
    return str(saved[0]["id"])


def _money(value: Decimal) -> str:
    return f"{value:,.2f}"


def _ratio(value: float | None, *, percent: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value * 100:.1f}%" if percent else f"{value:.2f}"


def _bps(rate: Decimal) -> str:
    return f"{(rate * BPS).normalize():f}"


def show(report: BacktestReport, chart_path: Path, saved_id: str | None) -> None:
    out.print(
        f"[bold]{escape(report.trader_name)}[/]  {', '.join(report.symbols)}  "
        f"{_day(report.start_ms)} .. {_day(report.end_ms)} UTC  (AI {report.ai}; fee "
        f"{_bps(report.fee_rate)} bps, slippage {_bps(report.slippage_rate)} bps)"
    )
    open_trades = len(report.trades) - len(report.closed)
    summary = Table("result", "", show_header=False)
    for figure, value in (
        (
            "trades",
            f"{len(report.closed)} closed" + (f", {open_trades} open at the end" if open_trades else ""),
        ),
        ("win rate", _ratio(report.win_rate, percent=True)),
        ("net PnL (USDT)", f"{_money(report.net_pnl_usd)} after {_money(report.fees_usd)} fees"),
        ("max drawdown", f"{report.max_drawdown_percent}% ({_money(report.max_drawdown_usd)} USDT)"),
        ("Sharpe", _ratio(report.sharpe)),
        ("exposure", _ratio(report.exposure, percent=True)),
    ):
        summary.add_row(figure, value)
    out.print(summary)
    symbols = Table("symbol", "trades", "win rate", "net PnL (USDT)", "fees (USDT)")
    for row in report.per_symbol:
        symbols.add_row(
            row.symbol,
            str(row.trades),
            _ratio(row.win_rate, percent=True),
            _money(row.pnl_usd),
            _money(row.fees_usd),
        )
    out.print(symbols)
    if report.trades:
        trades = Table("opened (UTC)", "symbol", "side", "entry", "closed (UTC)", "exit", "reason", "net PnL")
        for trade in report.trades[-TRADES_SHOWN:]:
            trades.add_row(
                trade.opened_at.strftime("%Y-%m-%d %H:%M"), trade.symbol, trade.side,
                f"{trade.entry_price:.2f}",
                trade.closed_at.strftime("%Y-%m-%d %H:%M") if trade.closed_at else "open",
                f"{trade.exit_price:.2f}" if trade.exit_price is not None else "-",
                trade.close_reason or "-", _money(trade.pnl_usd),
            )  # fmt: skip
        shown = min(len(report.trades), TRADES_SHOWN)
        out.print(f"the last {shown} of {len(report.trades)} trades (--json lists every one):")
        out.print(trades)
    out.print(
        f"{report.signals} signals, {report.check_moments} checks, {report.moments} moments replayed "
        f"in {report.elapsed_secs:.1f} s"
    )
    out.print(f"chart: {chart_path}", soft_wrap=True)
    if saved_id:
        out.print(f"saved as backtest {saved_id}")


JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@command
def backtest(  # noqa: PLR0917 - typer maps each option to a parameter
    trader: Annotated[
        str | None, typer.Option("--trader", help="A saved trader: id, id prefix (4+ characters) or name.")
    ] = None,
    description: Annotated[
        str | None,
        typer.Option("--description", help="A strategy in plain words (generate-strategy writes it)."),
    ] = None,
    symbols: Annotated[
        str | None, typer.Option("--symbols", help="Comma-separated symbols (default: the trader's).")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="Start (UTC): default the first recording.")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="End (UTC): default the last recording.")] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option("--timeframe-data", help="Directory of <SYMBOL>-<interval>.csv recordings."),
    ] = None,
    fee_bps: Annotated[
        float, typer.Option("--fee-bps", help="Fee per fill, basis points.")
    ] = DEFAULT_FEE_BPS,
    slippage_bps: Annotated[
        float, typer.Option("--slippage-bps", help="Slippage per fill, basis points.")
    ] = DEFAULT_SLIPPAGE_BPS,
    ai: Annotated[
        str,
        typer.Option(
            "--ai",
            help="Who decides on signals: off (the strategy's default stop and target), standin (the local "
            "stack's Gemini stand-in) or gemini (the project's model), both through analyze-signal.",
        ),
    ] = "off",
    output: Annotated[Path, typer.Option(help="Where the chart goes.")] = DEFAULT_OUTPUT,
    keep: Annotated[
        bool, typer.Option("--save/--no-save", help="Save the result as a backtests row.")
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """Replay a strategy over the recorded market through the worker's own signal run and trading."""
    if (trader is None) == (description is None):
        raise UsageProblem("give exactly one of --trader and --description")
    if ai not in AI_CHOICES:
        raise UsageProblem(f"--ai must be one of {', '.join(AI_CHOICES)}, not {ai!r}")
    fee, slippage = parse_bps(fee_bps, "--fee-bps"), parse_bps(slippage_bps, "--slippage-bps")
    wanted = (
        tuple(dict.fromkeys(s.strip().upper() for s in symbols.split(",") if s.strip())) if symbols else ()
    )
    with api() as client:
        if ai == "standin" and not _is_loopback(client.endpoint.url):
            raise UsageProblem(
                f"--ai standin needs the local stack (the Gemini stand-in runs only there), and this profile "
                f"uses {client.endpoint.url}: use --ai gemini for the project's model"
            )
        if trader is not None:
            row = find_trader(client, trader, TRADER_COLUMNS)
            chosen, trader_id = _trader(row), str(row["id"])
        else:
            assert description is not None
            with err.status("asking the AI for a strategy...", spinner="dots"):
                answer = client.call(
                    "generate-strategy",
                    {"description": description, "save": False},
                    what="generating the strategy",
                )
            chosen, trader_id = strategy_trader(client, answer["trader"]), None
        report, recordings = run(
            chosen, symbols=wanted, start=start, end=end, data_dir=data_dir or default_data_dir(), fee=fee,
            slippage=slippage, quiet=as_json, ai=ai, client=client,
        )  # fmt: skip
        chart_path = chart(report, recordings, output)
        saved_id = save(client, report, trader_id) if keep else None
    if as_json:
        emit_json({"backtest": report.as_json(), "chart": str(chart_path), "id": saved_id})
        return
    show(report, chart_path, saved_id)
