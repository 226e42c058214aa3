"""The Binance Spot simulator: one aiohttp server with REST (`/api/v3`), streams (`/ws`, `/stream`) and
test controls (`/_sim`), driven by a replay clock over the recorded candles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from aiohttp import web

from devstack.exchange.clock import ReplayClock
from devstack.exchange.data import default_data_dir
from devstack.exchange.engine import MatchingEngine
from devstack.exchange.errors import ApiError
from devstack.exchange.faults import Faults
from devstack.exchange.rest import RestApi
from devstack.exchange.streams import StreamHub
from devstack.exchange.symbols import SymbolSpec
from worker.market.recordings import SymbolData, load_directory
from worker.market.replay import SymbolMarket

logger = logging.getLogger(__name__)

# The local stack's well-known trading account (like Supabase's local keys: for this machine only).
DEV_API_KEY = "trademind-local-binance-api-key"
DEV_API_SECRET = "trademind-local-binance-api-secret"  # noqa: S105 (public, local-only)
DEV_BALANCES = {"USDT": Decimal(10_000), "BTC": Decimal("0.1"), "ETH": Decimal(2)}
# Start two days into the finest recordings, so a fresh worker can backfill its 1m and 5m history.
DEFAULT_WARMUP_MS = 2 * 86_400_000
BAN_AFTER_REJECTED = 20
BAN_SECS = 120.0


@dataclass(frozen=True)
class SimulatorConfig:
    """How to run one simulator instance."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: any free port (see ExchangeSimulator.port)
    data_dir: Path = field(default_factory=default_data_dir)
    symbols: frozenset[str] | None = None
    start_ms: int | None = None  # default: two days into the finest recordings
    speed: float = 60.0
    paused: bool = False
    tick_secs: float = 0.1
    kline_push_secs: float = 0.5
    ticker_push_secs: float = 1.0
    max_connection_age_secs: float = 24 * 3600.0
    weight_limit_1m: int = 6000
    api_key: str = DEV_API_KEY
    api_secret: str = DEV_API_SECRET
    balances: dict[str, Decimal] = field(default_factory=lambda: dict(DEV_BALANCES))


class RateLimiter:
    """Request weight per IP per wall-clock minute; 429 over the limit, 418 for clients that ignore it."""

    def __init__(self, limit_1m: int) -> None:
        self.limit_1m = limit_1m
        self._minute = 0
        self._used: dict[str, int] = defaultdict(int)
        self._rejected: dict[str, int] = defaultdict(int)
        self._banned_until: dict[str, float] = {}

    def _roll(self) -> None:
        minute = int(time.time() // 60)
        if minute != self._minute:
            self._minute = minute
            self._used.clear()
            self._rejected.clear()

    def used(self, ip: str) -> int:
        self._roll()
        return self._used[ip]

    def spend(self, ip: str, weight: int) -> bool:
        self._roll()
        if self._used[ip] + weight > self.limit_1m:
            return False
        self._used[ip] += weight
        return True

    def banned(self, ip: str) -> bool:
        return self._banned_until.get(ip, 0.0) > time.monotonic()

    def reject(self, ip: str, status: int) -> ApiError:
        self._rejected[ip] += 1
        if status == 429 and self._rejected[ip] > BAN_AFTER_REJECTED:
            self._banned_until[ip] = time.monotonic() + BAN_SECS
            status = 418
        if status == 418:
            return ApiError(-1003, "Way too much request weight used; IP banned until later.", 418)
        return ApiError(
            -1003,
            f"Too much request weight used; current limit is {self.limit_1m} request weight per 1 MINUTE. "
            "Please use WebSocket Streams for live updates to avoid polling the API.",
            429,
        )


class ExchangeSimulator:
    """Serve the replayed market; `await start()` / `await stop()`, or `run_forever()` from the CLI."""

    def __init__(self, config: SimulatorConfig, data: dict[str, SymbolData] | None = None) -> None:
        self.config = config
        data = (
            data if data is not None else load_directory(config.data_dir, set(config.symbols or ()) or None)
        )
        specs = {symbol: SymbolSpec.for_symbol(symbol) for symbol in sorted(data)}
        self.markets = {
            symbol: SymbolMarket(data[symbol], specs[symbol].price_decimals) for symbol in sorted(data)
        }
        start_ms = config.start_ms if config.start_ms is not None else default_start_ms(data)
        self.clock = ReplayClock(
            start_ms,
            speed=config.speed,
            end_ms=max(market.end_ms for market in self.markets.values()),
            paused=config.paused,
        )
        self.engine = MatchingEngine(specs)
        self.engine.create_account(dict(config.balances), config.api_key, config.api_secret)
        self.faults = Faults()
        self.limiter = RateLimiter(config.weight_limit_1m)
        self.hub = StreamHub(self)
        self.rest = RestApi(self)
        self._path_ms = start_ms
        self._runner: web.AppRunner | None = None
        self._ticker: asyncio.Task[None] | None = None
        self.port = config.port

    # Lifecycle -----------------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.add_routes(self.rest.routes())
        app.add_routes(
            [
                web.get("/ws", self.hub.handle),
                web.get("/ws/{streams:.*}", self.hub.handle),
                web.get("/stream", self.hub.handle),
                web.get("/_sim/state", self._state),
                web.post("/_sim/clock", self._set_clock),
                web.post("/_sim/faults", self._set_faults),
                web.post("/_sim/drop", self._drop),
                web.post("/_sim/server-shutdown", self._server_shutdown),
                web.post("/_sim/accounts", self._create_account),
            ]
        )
        app.on_shutdown.append(self._close_sockets)
        return app

    async def start(self) -> None:
        """Bind and start serving, and start the market clock's tick loop."""
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        if self.config.port == 0:
            self.port = int(self._runner.addresses[0][1])
        self._ticker = asyncio.create_task(self._tick_loop(), name="exchange-ticks")

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def run_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()

    async def _close_sockets(self, app: web.Application) -> None:
        for connection in list(self.hub.connections):
            await connection.ws.close(code=1001, message=b"server shutdown")

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}"

    async def sleep(self, secs: float) -> None:
        await asyncio.sleep(secs)

    # The market ----------------------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        last_drop = time.monotonic()
        while True:
            try:
                now_ms = self.clock.now_ms()
                self.catch_up(now_ms)
                self.hub.publish(now_ms)
                every = self.faults.drop_every_secs
                if every is not None and time.monotonic() - last_drop >= every:
                    last_drop = time.monotonic()
                    self.hub.drop_all()
            except Exception:
                # One bad tick must not stop the market; the traceback says what broke.
                logger.exception("exchange tick failed")
            await asyncio.sleep(self.config.tick_secs)

    def catch_up(self, now_ms: int) -> None:
        """Run resting orders along the price path from the last check up to now_ms."""
        if now_ms <= self._path_ms:
            return
        for symbol, market in self.markets.items():
            if not any(order.is_open for order in self.engine.orders[symbol].values()):
                continue
            span = market.price_range(self._path_ms, now_ms)
            if span is not None:
                low, high = span
                self.engine.on_price_path(symbol, Decimal(f"{low:.8f}"), Decimal(f"{high:.8f}"), now_ms)
        self._path_ms = now_ms

    def last_price(self, symbol: str, now_ms: int) -> Decimal:
        """The replayed price orders fill at (after resting orders have seen the path up to now)."""
        self.catch_up(now_ms)
        market = self.markets.get(symbol)
        price = market.price_at(now_ms) if market is not None else None
        if price is None:
            raise ApiError(-1013, "Market is closed.")
        return Decimal(f"{price:.8f}")

    # Controls ------------------------------------------------------------------------------------------
    async def _state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state())

    def state(self) -> dict[str, object]:
        return {
            "market_time_ms": self.clock.now_ms(),
            "speed": self.clock.speed,
            "paused": self.clock.paused,
            "end_ms": self.clock.end_ms,
            "symbols": sorted(self.markets),
            "connections": len(self.hub.connections),
            "streams": sum(len(c.streams) for c in self.hub.connections),
            "faults": self.faults.as_dict(),
        }

    async def _set_clock(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            if "speed" in body:
                self.clock.set_speed(float(str(body["speed"])))
            if body.get("paused") is True:
                self.clock.pause()
            elif body.get("paused") is False:
                self.clock.resume()
            if "market_time_ms" in body:
                self.clock.jump_to(int(str(body["market_time_ms"])))
            if "advance_ms" in body:
                self.clock.advance_ms(int(str(body["advance_ms"])))
        except (TypeError, ValueError) as error:
            return _control_error(str(error))
        return web.json_response(self.state())

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults.update(await _json_body(request))
        except (TypeError, ValueError) as error:
            return _control_error(str(error))
        return web.json_response(self.faults.as_dict())

    async def _drop(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        return web.json_response({"dropped": self.hub.drop_all(abort=bool(body.get("abort", False)))})

    async def _server_shutdown(self, request: web.Request) -> web.Response:
        self.hub.announce_shutdown(self.clock.now_ms())
        return web.json_response({"announced": len(self.hub.connections)})

    async def _create_account(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        balances = body.get("balances", {})
        if not isinstance(balances, dict):
            return _control_error("balances must be an object of asset -> amount string")
        try:
            parsed = {str(asset): Decimal(str(amount)) for asset, amount in balances.items()}
        except ArithmeticError:
            return _control_error("balances must be decimal strings")
        account = self.engine.create_account(parsed)
        return web.json_response({"apiKey": account.api_key, "secretKey": account.secret})


def default_start_ms(data: dict[str, SymbolData]) -> int:
    """Two days into the latest-starting finest recording, on a minute boundary."""
    firsts = [int(symbol.files[min(symbol.files)].open_time[0]) for symbol in data.values()]
    return (max(firsts) + DEFAULT_WARMUP_MS) // 60_000 * 60_000


async def _json_body(request: web.Request) -> dict[str, object]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _control_error(message: str) -> web.Response:
    return web.json_response({"error": {"code": "bad_request", "message": message}}, status=400)
