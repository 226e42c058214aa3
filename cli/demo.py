"""`trademind demo`: the whole product on the local stack in one command, from sign-up to summary and chart.

Steps: the stack (`dev up`); the exchange replaying from a known start at the demo's speed; a demo user
signed up and subscribed; `generate-strategy` with the user's JWT (which saves the trader and provisions
the user's machine through provision-machine and the Fly stand-in); the worker trading on paper while a
live view follows it through Realtime and PostgREST; then a summary checked against the database, a chart,
and (without --keep) the machine destroyed and the stack put back as it was.

The worker keeps the market's time (the exchange's clock, worker/clock.py): its cooldowns, analysis budget,
timers and re-analysis run on it, so the replay at `speed` trades as the same strategy would trade live at
1x, with the machine and the trader exactly as generate-strategy and provision-machine made them.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.syntax import Syntax

console = Console()
errors = Console(stderr=True)

DEFAULT_DESCRIPTION = (
    "Trade BTC and ETH on the 5 minute chart: go long when MACD crosses above its signal line or the "
    "9 EMA crosses above the 21 EMA."
)
DEFAULT_START = "2025-01-03T03:00:00Z"  # two days into the recordings: history for the indicators
DEFAULT_OUTPUT = Path(".devstack/demo")
DEMO_PROFILE = "demo"  # the console profile that holds the demo user's session
HEALTHY_TIMEOUT_SECS = 90.0
SETTLE_SECS = 2.0  # after pausing the market, for fills already under way to land
# Room for the demo's paper account to trade (the trader's own limits, set as its user).
DEMO_RISK = {"max_position_size_usd": 1000, "max_open_positions": 3, "daily_loss_limit_usd": 500}


class DemoFailure(Exception):
    """One part of the product misbehaved; the message names it (printed as one line, exit 1)."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    speed: float
    description: str
    market_hours: float
    start: str
    keep: bool
    output: Path


def step(message: str) -> None:
    console.print(f"[bold cyan]==>[/] {message}")


def demo(  # noqa: PLR0917 - typer maps each option to a parameter
    speed: Annotated[float, typer.Option(min=1, max=3600, help="Market seconds per wall second.")] = 300,
    description: Annotated[
        str, typer.Option(help="The strategy in plain words (sent to generate-strategy).")
    ] = DEFAULT_DESCRIPTION,
    market_hours: Annotated[float, typer.Option(min=0.5, max=720, help="How much market time to run.")] = 24,
    start: Annotated[
        str,
        typer.Option(help="Market start: ISO time with zone, or Unix ms (data: 2025-01-01..02-04)."),
    ] = DEFAULT_START,
    keep: Annotated[
        bool, typer.Option("--keep", help="Leave the stack, the machine and the market running.")
    ] = False,
    output: Annotated[Path, typer.Option(help="Where the chart and summary.json go.")] = DEFAULT_OUTPUT,
) -> None:
    """Run the whole product locally: a user, an AI strategy, a worker trading on a replayed market."""
    options = DemoOptions(speed, description, market_hours, start, keep, output)
    started = time.monotonic()
    try:
        _run(options)
    except DemoFailure as failure:
        errors.print(f"[red]demo failed:[/] {failure}")
        raise typer.Exit(1) from failure
    console.print(f"demo finished in {time.monotonic() - started:.0f}s")
    console.print(
        f"open the dashboard on this demo's data: [bold].venv/bin/trademind dev up --quiet && "
        f".venv/bin/trademind --profile {DEMO_PROFILE}[/]",
        soft_wrap=True,  # one line, so it can be copied whole
    )


def _run(options: DemoOptions) -> None:  # noqa: PLR0915 - the steps read best in one place
    from cli.demo_frontend import Frontend, FrontendError, sign_up
    from cli.demo_market import DemoMarket, MarketError, format_market_ms, parse_start_ms
    from devstack.errors import StackError
    from devstack.fly.client import FlyStandInClient
    from devstack.stack import DevStack

    try:
        start_ms = parse_start_ms(options.start)
    except ValueError as error:
        raise DemoFailure(f"--start: {error}") from error
    stack = DevStack()
    step("starting the local stack (trademind dev up)")
    stack_was_up = stack.is_up()
    try:
        stack.up(progress=lambda message: console.print(f"    {message}", style="dim"))
    except StackError as error:
        raise DemoFailure(f"local stack: {error}") from error

    market = DemoMarket(stack)
    fly = FlyStandInClient()
    frontend: Frontend | None = None
    machine_id: str | None = None
    try:
        step(
            f"restarting the exchange simulator at {format_market_ms(start_ms)}, {options.speed:g}x (paused)"
        )
        try:
            state = market.restart(start_ms=start_ms, speed=options.speed)
        except MarketError as error:
            raise DemoFailure(f"exchange simulator: {error}") from error
        end_ms = min(start_ms + int(options.market_hours * 3_600_000), int(state["end_ms"]))

        step("signing up a demo user (Supabase Auth; tier pro, subscription active, paper trading)")
        try:
            user = sign_up(stack)
        except FrontendError as error:
            raise DemoFailure(f"sign-up: {error}") from error
        console.print(f"    user {user.email} ({user.id})")
        _save_demo_session(user)
        frontend = Frontend(stack.config.api_url, stack.config.anon_key, user)

        step("generate-strategy: the AI writes the signal code and instructions")
        console.print(f"    [italic]{options.description}[/]")
        try:
            generated = frontend.call("generate-strategy", {"description": options.description})
        except FrontendError as error:
            raise DemoFailure(str(error)) from error
        trader = generated["trader"]
        _show_strategy(trader, generated.get("usage", {}))
        machine_id = generated.get("machineId")
        if not machine_id:
            reason = (generated.get("machine") or {}).get("message", "no reason given")
            raise DemoFailure(f"provision-machine: no machine for the demo user ({reason})")
        console.print(
            f"    provision-machine: machine [bold]{machine_id}[/] ({generated['machine']['status']})"
        )

        step("the trader's risk limits for the demo's paper account (as its user)")
        _set_risk(frontend, trader)
        _wait_healthy(frontend, market, machine_id)

        step(f"trading: {options.market_hours:g} market hours at {options.speed:g}x "
             f"(about {options.market_hours * 3600 / options.speed:.0f}s)")  # fmt: skip
        timeline = market.resume()
        view_state = _watch(
            stack=stack, user=user, machine_id=machine_id, end_ms=end_ms, fly=fly, timeline=timeline
        )
        timeline = market.pause(timeline)
        time.sleep(SETTLE_SECS)
        peak_rss_mb = view_state.peak_rss_mb

        if not options.keep:
            step("destroy-machine: a graceful shutdown of the demo's worker")
            try:
                destroyed = frontend.call("destroy-machine", {"reason": "user_request"})
            except FrontendError as error:
                raise DemoFailure(str(error)) from error
            console.print(
                f"    {destroyed.get('machineId')}: {destroyed.get('openPositions')} open position(s), "
                f"{destroyed.get('watchingSignals')} watching signal(s) left as they are"
            )
            machine_id = None

        step("summary (from the database through PostgREST, checked position by position)")
        _report(
            frontend=frontend, market=market, options=options, timeline=timeline, trader=trader,
            view_state=view_state, peak_rss_mb=peak_rss_mb,
        )  # fmt: skip
        if view_state.counts.get("signals", 0) and not view_state.realtime_events:
            raise DemoFailure("Realtime: signals were written but no change reached the view")
    finally:
        _teardown(
            stack=stack, market=market, fly=fly, frontend=frontend, machine_id=machine_id,
            keep=options.keep, stack_was_up=stack_was_up,
        )  # fmt: skip


def _show_strategy(trader: dict[str, Any], usage: dict[str, Any]) -> None:
    console.print(
        Panel(
            Syntax(trader["signalCode"], "python", line_numbers=False, word_wrap=True),
            title=f"{trader['name']}: signal code", subtitle=f"model {usage.get('model', '-')}",
        )
    )  # fmt: skip
    console.print(Panel(trader["aiInstructions"], title="analysis instructions"))
    symbols = ", ".join(trader["symbols"] or ["the default universe"])
    console.print(
        f"    timeframes {', '.join(trader['timeframes'])}; checks on {trader['recommendedInterval']}; "
        f"re-analysis every {trader['reanalysisInterval']}; symbols {symbols}"
    )


def _set_risk(frontend: Any, trader: dict[str, Any]) -> None:
    from cli.demo_frontend import FrontendError

    try:
        frontend.update_trader(trader["id"], {"risk": DEMO_RISK})
    except FrontendError as error:
        raise DemoFailure(str(error)) from error
    console.print(f"    risk {DEMO_RISK}")


def _wait_healthy(frontend: Any, market: Any, machine_id: str) -> None:
    """check-machine-health (as the user) until the worker is healthy and subscribed to the market."""
    from cli.demo_frontend import FrontendError

    deadline = time.monotonic() + HEALTHY_TIMEOUT_SECS
    last = "no answer yet"
    while time.monotonic() < deadline:
        try:
            report = frontend.call("check-machine-health", {})
        except FrontendError as error:
            last = str(error)
        else:
            mine = [m for m in report.get("machines", []) if m.get("machineId") == machine_id]
            healthy = bool(mine) and mine[0].get("healthy") and (mine[0].get("activeTraders") or 0) >= 1
            last = json.dumps(mine[0]) if mine else "machine not listed"
            if healthy and int(market.state()["streams"]) > 0:
                console.print(f"    machine {machine_id} healthy, worker subscribed to the market")
                return
        time.sleep(1.0)
    raise DemoFailure(
        f"worker machine {machine_id} was not healthy within {HEALTHY_TIMEOUT_SECS:.0f}s ({last}); "
        f"see .devstack/fly/machines/{machine_id}.log"
    )


def _watch(*, stack: Any, user: Any, machine_id: str, end_ms: int, fly: Any, timeline: Any) -> Any:
    from cli.demo_view import LiveView, ViewFailure, ViewTarget

    def worker_pid() -> int | None:
        try:
            info = fly.process(machine_id)
        except Exception:  # the stand-in not answering counts as no process
            return None
        pid = info.get("pid")
        return int(pid) if pid else None

    target = ViewTarget(
        stack.config.api_url, stack.config.anon_key, str(user.id), user.jwt, machine_id, end_ms, worker_pid,
        timeline.market_ms_at,
    )  # fmt: skip
    view = LiveView(target, console)
    try:
        return asyncio.run(view.run())
    except* ViewFailure as group:
        raise DemoFailure(str(group.exceptions[0])) from None
    except* Exception as group:
        raise DemoFailure(f"live view: {group.exceptions[0]!r}") from None


def _report(
    *,
    frontend: Any,
    market: Any,
    options: DemoOptions,
    timeline: Any,
    trader: dict[str, Any],
    view_state: Any,
    peak_rss_mb: float | None,
) -> None:
    from cli.demo_chart import draw, markers
    from cli.demo_frontend import FrontendError
    from cli.demo_market import MarketError, format_market_ms
    from cli.demo_summary import InconsistentSummary, summarise, summary_table, write_json

    try:
        signals = frontend.rows("signals", "id,symbol,status,created_at")
        analyses = frontend.rows("analysis_history", "id,decision,timestamp")
        trades = frontend.rows("trades", order="executed_at")
        positions = frontend.rows("positions")
        accounts = frontend.rows("paper_accounts", "starting_balance_usd")
        users = frontend.rows("users", "paper_starting_balance_usd")
    except FrontendError as error:
        raise DemoFailure(str(error)) from error
    if not signals:
        raise DemoFailure(
            f"worker: no signal in {options.market_hours:g} market hours (the strategy never triggered, or "
            "the worker did not check it); try more --market-hours or another --description"
        )
    if not analyses:
        raise DemoFailure("analyze-signal: signals were written but none was analysed")
    starting = accounts[0]["starting_balance_usd"] if accounts else users[0]["paper_starting_balance_usd"]
    symbols = sorted({row["symbol"] for row in signals} | set(trader["symbols"] or []))
    try:
        last_prices = market.last_prices(symbols)
        summary = summarise(
            signals=signals, analyses=analyses, trades=trades, positions=positions,
            starting_balance_usd=Decimal(str(starting)), last_prices=last_prices,
        )  # fmt: skip
    except InconsistentSummary as error:
        raise DemoFailure(f"database: {error}") from error
    except MarketError as error:
        raise DemoFailure(f"exchange simulator: {error}") from error
    period = f"{format_market_ms(timeline.market_ms)} to {format_market_ms(timeline.end_market_ms)}"
    console.print(summary_table(summary, f"{trader['name']}: {period} at {options.speed:g}x"))
    if not summary.trades_filled:
        console.print("[yellow]no trade was made: every signal was judged no_trade or watch[/]")

    output = options.output
    output.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    interval = "5m" if options.market_hours <= 72 else "1h"
    try:
        prices = {
            symbol: market.klines(symbol, interval, timeline.market_ms, timeline.end_market_ms)
            for symbol in symbols
        }
    except MarketError as error:
        raise DemoFailure(f"exchange simulator: {error}") from error
    chart = draw(
        output / f"demo-{stamp}.png",
        title=f"{trader['name']} ({period}, paper)",
        prices=prices,
        fills=markers(trades, positions, timeline.market_ms_at),
        equity=[(timeline.market_ms_at(point.at), float(point.equity_usd)) for point in summary.equity],
        starting_balance_usd=float(summary.starting_balance_usd),
    )
    summary_path = output / f"demo-{stamp}.json"
    write_json(
        summary,
        summary_path,
        {
            "user_id": str(frontend.user.id),
            "trader_id": trader["id"],
            "market_start_ms": timeline.market_ms,
            "market_end_ms": timeline.end_market_ms,
            "speed": options.speed,
            "chart": str(chart),
            "realtime_events": view_state.realtime_events,
            "worker_peak_rss_mb": peak_rss_mb,
        },
    )
    console.print(f"chart: [bold]{chart}[/]\nsummary: {summary_path}")
    if peak_rss_mb is not None:
        console.print(f"worker peak RSS: {peak_rss_mb:.0f} MB")


def _save_demo_session(user: Any) -> None:
    """The demo user's session in the console's `demo` profile: the dashboard opens on the demo's data."""
    import jwt

    from cli.console.session import Profile, Session

    expires_at = int(jwt.decode(user.jwt, options={"verify_signature": False})["exp"])
    session = Session(user.jwt, user.refresh_token, expires_at, str(user.id), user.email)
    Profile(DEMO_PROFILE).save_session(session)


def _teardown(
    *,
    stack: Any,
    market: Any,
    fly: Any,
    frontend: Any,
    machine_id: str | None,
    keep: bool,
    stack_was_up: bool,
) -> None:
    """Without --keep: the machine destroyed, the stack's exchange back, the stack down if we started it."""
    try:
        if keep:
            try:
                market.set_clock(paused=False)
            except Exception as error:  # the original failure, if any, is what the user must see
                errors.print(f"[yellow]could not restart the market clock: {error}[/]")
            console.print(
                "the stack, the machine and the market keep running: `.venv/bin/trademind machines --local "
                "health`, `.venv/bin/trademind dev psql`; `make down` stops everything"
            )
            return
        if machine_id is not None and frontend is not None:
            try:
                frontend.call("destroy-machine", {"reason": "user_request"})
            except Exception as error:  # cleanup must go on; say what was left behind
                errors.print(f"[yellow]could not destroy machine {machine_id}: {error}[/]")
        if stack_was_up:
            market.restore()
        else:
            stack.down()
    finally:
        market.close()
        fly.close()
        if frontend is not None:
            frontend.close()
