"""WebSocket streams (`/ws/<stream>`, `/stream?streams=a/b`, live SUBSCRIBE): kline and ticker events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import WSMsgType, web

from worker.domain.intervals import INTERVAL_MS
from worker.market.replay import ticker_event

if TYPE_CHECKING:
    from devstack.exchange.server import ExchangeSimulator

logger = logging.getLogger(__name__)

MAX_STREAMS_PER_CONNECTION = 1024
MAX_INCOMING_PER_SEC = 5
SEND_QUEUE_LIMIT = 20_000
_STREAM_NAME = re.compile(r"^(?P<symbol>[a-z0-9]+)@(?:kline_(?P<interval>\w+)|(?P<ticker>ticker))$")


@dataclass(frozen=True, slots=True)
class StreamName:
    name: str
    symbol: str  # upper case, as in payloads
    interval: str | None  # None for the ticker stream

    @classmethod
    def parse(cls, name: str) -> StreamName | None:
        match = _STREAM_NAME.match(name)
        if match is None:
            return None
        interval = match["interval"]
        if interval is not None and interval not in INTERVAL_MS:
            return None
        return cls(name, match["symbol"].upper(), interval)


@dataclass(eq=False)
class Connection:
    """One client socket and what it listens to."""

    ws: web.WebSocketResponse
    request: web.Request
    combined: bool
    opened_wall_secs: float
    streams: dict[str, StreamName] = field(default_factory=dict)
    # Per kline stream: the open time of the candle this connection last heard about.
    kline_bucket_ms: dict[str, int] = field(default_factory=dict)
    queue: asyncio.Queue[str | None] = field(default_factory=lambda: asyncio.Queue(SEND_QUEUE_LIMIT))
    incoming: list[float] = field(default_factory=list)
    closing: bool = False

    def close_soon(self) -> None:
        """Close after what is already queued, so a drop lands between messages."""
        if not self.closing:
            self.closing = True
            with contextlib.suppress(asyncio.QueueFull):
                self.queue.put_nowait(None)

    def enqueue(self, message: str) -> bool:
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            return False
        return True

    def wrap(self, stream: str, payload: str) -> str:
        return f'{{"stream":"{stream}","data":{payload}}}' if self.combined else payload


class StreamHub:
    """Every open socket; turns the replayed market into Binance's stream events on each tick."""

    def __init__(self, simulator: ExchangeSimulator) -> None:
        self.simulator = simulator
        self.connections: set[Connection] = set()
        self._last_kline_push_secs = 0.0
        self._last_ticker_push_secs = 0.0

    # Sockets ---------------------------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        combined = request.path.startswith("/stream")
        names: list[str] = []
        if combined:
            names = [n for n in request.query.get("streams", "").split("/") if n]
        else:
            raw = request.match_info.get("streams", "")
            names = [n for n in raw.split("/") if n]
        if len(names) > MAX_STREAMS_PER_CONNECTION:
            return web.json_response({"code": 2, "msg": "Invalid request: too many streams"}, status=400)
        ws = web.WebSocketResponse(heartbeat=20.0, autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        connection = Connection(ws, request, combined, time.monotonic())
        self._subscribe(connection, names)
        self.connections.add(connection)
        try:
            async with asyncio.TaskGroup() as group:
                sender = group.create_task(self._send_loop(connection))
                await self._receive_loop(connection)
                sender.cancel()
        finally:
            self.connections.discard(connection)
            if not ws.closed:
                await ws.close()
        return ws

    async def _send_loop(self, connection: Connection) -> None:
        while True:
            message = await connection.queue.get()
            if message is None:
                await connection.ws.close()
                return
            try:
                await connection.ws.send_str(message)
            except (ConnectionError, RuntimeError):
                return

    async def _receive_loop(self, connection: Connection) -> None:
        async for message in connection.ws:
            if message.type != WSMsgType.TEXT:
                continue
            now = time.monotonic()
            connection.incoming = [t for t in connection.incoming if now - t < 1.0] + [now]
            if len(connection.incoming) > MAX_INCOMING_PER_SEC:
                logger.info("closing a connection that sent more than %d messages/s", MAX_INCOMING_PER_SEC)
                await connection.ws.close(code=1008, message=b"Too many requests")
                return
            connection.enqueue(json.dumps(self._control(connection, message.data)))

    def _control(self, connection: Connection, text: str) -> dict[str, object]:
        try:
            request = json.loads(text)
        except ValueError:
            request = None
        if not isinstance(request, dict):
            return {"code": 3, "msg": "Invalid JSON: expected a JSON object"}
        request_id = request.get("id")
        method, params = request.get("method"), request.get("params", [])
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": sorted(connection.streams), "id": request_id}
        if method not in ("SUBSCRIBE", "UNSUBSCRIBE"):
            return {"code": 2, "msg": f"Invalid request: unknown method {method!r}", "id": request_id}
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return {"code": 1, "msg": "Invalid value type: expected a list of stream names", "id": request_id}
        if method == "SUBSCRIBE":
            if len(set(connection.streams) | set(params)) > MAX_STREAMS_PER_CONNECTION:
                return {"code": 2, "msg": "Invalid request: too many streams", "id": request_id}
            self._subscribe(connection, params)
        else:
            for name in params:
                connection.streams.pop(name, None)
                connection.kline_bucket_ms.pop(name, None)
        return {"result": None, "id": request_id}

    def _subscribe(self, connection: Connection, names: Iterable[str]) -> None:
        for name in names:
            stream = StreamName.parse(name)
            if stream is None:
                # Binance accepts any name and simply sends nothing for one that does not exist.
                connection.streams[name] = StreamName(name, "", None)
                continue
            connection.streams[name] = stream
            if stream.interval is not None and name not in connection.kline_bucket_ms:
                # Events start with the candle forming at subscription time.
                interval_ms = INTERVAL_MS[stream.interval]
                now_ms = self.simulator.clock.now_ms()
                connection.kline_bucket_ms[name] = now_ms // interval_ms * interval_ms

    # Faults -----------------------------------------------------------------------------------------
    def drop_all(self, *, abort: bool = False) -> int:
        """Close every socket now (abort: cut the TCP connection without a close frame)."""
        dropped = 0
        for connection in list(self.connections):
            dropped += 1
            transport = connection.request.transport
            if abort and transport is not None:
                transport.abort()
            else:
                connection.close_soon()
        return dropped

    def announce_shutdown(self, market_ms: int) -> None:
        payload = json.dumps({"e": "serverShutdown", "E": market_ms})
        for connection in self.connections:
            connection.enqueue(connection.wrap("!serverShutdown", payload))

    # Ticks -----------------------------------------------------------------------------------------
    def publish(self, now_ms: int) -> None:
        """Send what happened up to market time now_ms: closed candles, forming ones, tickers."""
        config = self.simulator.config
        wall = time.monotonic()
        push_klines = wall - self._last_kline_push_secs >= config.kline_push_secs
        push_tickers = wall - self._last_ticker_push_secs >= config.ticker_push_secs
        if push_klines:
            self._last_kline_push_secs = wall
        if push_tickers:
            self._last_ticker_push_secs = wall
        faults = self.simulator.faults
        cache: dict[tuple[object, ...], list[str]] = {}
        for connection in list(self.connections):
            if connection.closing:
                continue
            if wall - connection.opened_wall_secs > config.max_connection_age_secs:
                connection.close_soon()  # Binance's 24 h limit on one connection
                continue
            for name, stream in connection.streams.items():
                if faults.is_held(name):
                    continue  # its candle bucket stays where it was: nothing is lost
                messages = self._messages(
                    connection, stream, now_ms, cache, push_klines=push_klines, push_tickers=push_tickers
                )
                if not messages or faults.is_stalled(name):
                    continue
                if not all(connection.enqueue(connection.wrap(name, payload)) for payload in messages):
                    logger.warning("dropping a slow client: its send queue is full")
                    self.drop_slow(connection)
                    break

    def _messages(
        self,
        connection: Connection,
        stream: StreamName,
        now_ms: int,
        cache: dict[tuple[object, ...], list[str]],
        *,
        push_klines: bool,
        push_tickers: bool,
    ) -> list[str]:
        """This tick's payloads for one stream of one connection (shared across connections)."""
        market = self.simulator.markets.get(stream.symbol)
        if market is None:
            return []
        if stream.interval is None:
            if not push_tickers:
                return []
            key: tuple[object, ...] = ("ticker", stream.name)
            if key not in cache:
                ticker = market.ticker(now_ms)
                cache[key] = [] if ticker is None else [json.dumps(ticker_event(ticker, now_ms))]
            return cache[key]
        interval_ms = INTERVAL_MS[stream.interval]
        bucket = now_ms // interval_ms * interval_ms
        previous = connection.kline_bucket_ms.get(stream.name, bucket)
        connection.kline_bucket_ms[stream.name] = bucket
        key = ("kline", stream.name, previous, bucket)
        if key not in cache:
            cache[key] = self._kline_events(stream, interval_ms, previous, now_ms, push_klines)
        return cache[key]

    def drop_slow(self, connection: Connection) -> None:
        transport = connection.request.transport
        if transport is not None:
            transport.abort()

    def _kline_events(
        self, stream: StreamName, interval_ms: int, previous_bucket: int, now_ms: int, push: bool
    ) -> list[str]:
        market = self.simulator.markets[stream.symbol]
        assert stream.interval is not None
        current_bucket = now_ms // interval_ms * interval_ms
        events = [
            json.dumps(kline.stream_payload(stream.symbol, stream.interval, kline.close_time + 1))
            for kline in market.closed_klines(interval_ms, previous_bucket, current_bucket)
        ]
        # As Binance: a close sends the final candle; the next one's first update comes once time has
        # passed in it (a candle sent at the very instant it opens would hold only its open).
        if (push or events) and now_ms > current_bucket:
            forming = market.candle_at(interval_ms, now_ms)
            if forming is not None:
                events.append(json.dumps(forming.stream_payload(stream.symbol, stream.interval, now_ms)))
        return events
