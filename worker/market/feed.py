"""The market feed: Binance combined streams into the kline and ticker stores, with no candle missing.

Streams are spread over connections of at most 1024 streams each. Every (re)connect is followed by a REST
backfill from the newest stored candle, so candles that closed while we were away are filled in; a new
candle that arrives after a gap, or after a candle we never saw close, triggers the same backfill.
Connections reconnect with exponential backoff and jitter, on their own before Binance's 24 h limit, on a
`serverShutdown` notice, and when they fall silent.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from worker.clock import Clock, LiveClock, MarketClock
from worker.domain.intervals import INTERVAL_MS
from worker.errors import ConfigError, RateLimited, TransientError
from worker.log_setup import LogOnce
from worker.market.messages import (
    ControlReply,
    KlineUpdate,
    MalformedMessage,
    ServerShutdown,
    Ticker,
    parse_message,
)
from worker.market.reachability import Reachability
from worker.market.rest import MAX_KLINES_PER_REQUEST, KlineSource
from worker.market.store import KlineStore, Upsert
from worker.market.tickers import TickerStore
from worker.retry import Backoff

logger = logging.getLogger(__name__)

MAX_STREAMS_PER_CONNECTION = 1024
# Stream names in the URL are kept short of common request-line limits; the rest go in one SUBSCRIBE.
_MAX_URL_STREAM_CHARS = 2000


@dataclass(frozen=True)
class FeedSettings:
    """The feed's slice of the worker settings."""

    ws_base_url: str = "wss://stream.binance.com:9443"
    max_streams_per_connection: int = MAX_STREAMS_PER_CONNECTION
    backfill_limit: int = 1000
    backfill_concurrency: int = 4
    stale_after_secs: float = 30.0  # a connection with no message this long is reconnected
    stream_stale_after_secs: float | None = 120.0  # one kline stream silent this long: reconnect
    max_connection_age_secs: float = 23.5 * 3600  # before Binance's 24 h cut-off
    open_timeout_secs: float = 10.0
    backoff: Backoff = field(default_factory=lambda: Backoff(base_secs=0.5, max_secs=30.0))
    log_repeat_secs: float = 300.0


@dataclass(frozen=True, slots=True)
class FeedHealth:
    """What the HTTP API reports about the feed."""

    connected: bool  # every connection is open
    stale: bool  # nothing heard for longer than stale_after_secs (or never connected)
    last_message_at: datetime | None
    connections: int
    open_connections: int
    streams: int
    reconnects: int
    malformed_messages: int
    pending_backfills: int
    last_error: str | None


KlineKey = tuple[str, str]  # (symbol, interval)
# Called with (symbol, interval, open_time_ms) when the stream delivers a candle's closing update.
KlineClosedListener = Callable[[str, str, int], None]


def kline_stream(symbol: str, interval: str) -> str:
    return f"{symbol.lower()}@kline_{interval}"


def ticker_stream(symbol: str) -> str:
    return f"{symbol.lower()}@ticker"


class _Reconnect(Exception):
    """Leave the current connection and open a new one (planned: no backoff)."""


class _Silent(_Reconnect):
    """The connection (or one of its streams) fell silent: reconnect, and count the exchange unreachable."""


@dataclass(eq=False)
class _Connection:
    """One socket's worth of streams and its state."""

    number: int
    wanted: set[str] = field(default_factory=set)
    subscribed: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    socket: ClientConnection | None = None
    opened_at: float = 0.0
    last_message_at: float = 0.0
    stream_last_at: dict[str, float] = field(default_factory=dict)
    task: asyncio.Task[None] | None = None
    next_request_id: int = 1


class MarketFeed:
    """Keep the stores current for the wanted kline series and tickers; `await run()` until cancelled."""

    def __init__(
        self,
        settings: FeedSettings,
        store: KlineStore,
        tickers: TickerStore,
        source: KlineSource,
        *,
        clock: Clock | None = None,
        market: MarketClock | None = None,
        connector: Callable[..., Any] = connect,
        reachability: Reachability | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.tickers = tickers
        self.source = source
        self.clock = clock or LiveClock()
        # Market time: every event's time moves it forward, and candles are stamped with it when stored.
        self.market = market or MarketClock(self.clock)
        self._connect = connector
        self.reachability = reachability or Reachability()
        self._klines: dict[str, KlineKey] = {}  # stream name -> series
        self._tickers: dict[str, str] = {}  # stream name -> symbol
        self._connections: list[_Connection] = []
        self._connection_numbers = 0
        self._layout_changed = asyncio.Event()
        self._backfill_queue: asyncio.Queue[KlineKey] = asyncio.Queue()
        # Series waiting for a backfill -> the oldest open time to fetch from (None: the newest candles).
        self._backfill_pending: dict[KlineKey, int | None] = {}
        self._group: asyncio.TaskGroup | None = None
        self._last_message_at: float | None = None
        self._last_message_wall: datetime | None = None
        self._reconnects = 0
        self._malformed = 0
        self._last_error: str | None = None
        self._log_once = LogOnce(logger, settings.log_repeat_secs)
        self._closed_listeners: list[KlineClosedListener] = []

    # Listeners ---------------------------------------------------------------------------------------
    def add_kline_closed_listener(self, listener: KlineClosedListener) -> None:
        """Call `listener(symbol, interval, open_time_ms)` right after a streamed closing kline is stored.

        Called synchronously from the reader: it must be cheap; an exception is logged, never raised here.
        Candles filled in by a REST backfill are not announced (they closed while we were not listening).
        """
        self._closed_listeners.append(listener)

    def remove_kline_closed_listener(self, listener: KlineClosedListener) -> None:
        if listener in self._closed_listeners:
            self._closed_listeners.remove(listener)

    # Subscriptions -------------------------------------------------------------------------------------
    def set_subscriptions(self, klines: set[KlineKey], tickers: set[str]) -> None:
        """Follow exactly these (symbol, interval) series and ticker symbols; changes apply live."""
        for symbol, interval in klines:
            if interval not in INTERVAL_MS:
                raise ConfigError(f"unknown kline interval {interval!r} for symbol={symbol}")
        wanted_klines = {kline_stream(symbol, interval): (symbol, interval) for symbol, interval in klines}
        wanted_tickers = {ticker_stream(symbol): symbol for symbol in tickers}
        for name, key in self._klines.items():
            if name not in wanted_klines:
                self.store.drop(*key)
        for name, symbol in self._tickers.items():
            if name not in wanted_tickers:
                self.tickers.drop(symbol)
        added = [name for name in wanted_klines if name not in self._klines]
        self._klines, self._tickers = wanted_klines, wanted_tickers
        self._assign()
        for name in added:
            key = wanted_klines[name]
            self.request_backfill(key, self.store.series(*key).last_open_time)

    def _assign(self) -> None:
        """Keep streams on their connection; put new ones where there is room, opening connections."""
        wanted = set(self._klines) | set(self._tickers)
        placed: set[str] = set()
        for connection in self._connections:
            kept = connection.wanted & wanted
            if kept != connection.wanted:
                connection.wanted = kept
                connection.changed.set()
            placed |= kept
        missing = sorted(wanted - placed)
        limit = self.settings.max_streams_per_connection
        for connection in self._connections:
            room = limit - len(connection.wanted)
            if missing and room > 0:
                connection.wanted |= set(missing[:room])
                missing = missing[room:]
                connection.changed.set()
        while missing:
            self._connection_numbers += 1
            connection = _Connection(self._connection_numbers, set(missing[:limit]))
            missing = missing[limit:]
            self._connections.append(connection)
        self._layout_changed.set()

    # Health ------------------------------------------------------------------------------------------
    def health(self) -> FeedHealth:
        now = self.clock.monotonic()
        open_connections = sum(1 for c in self._connections if c.socket is not None)
        stale = self._last_message_at is None or now - self._last_message_at > self.settings.stale_after_secs
        return FeedHealth(
            connected=bool(self._connections) and open_connections == len(self._connections),
            stale=stale,
            last_message_at=self._last_message_wall,
            connections=len(self._connections),
            open_connections=open_connections,
            streams=len(self._klines) + len(self._tickers),
            reconnects=self._reconnects,
            malformed_messages=self._malformed,
            pending_backfills=len(self._backfill_pending),
            last_error=self._last_error,
        )

    # Running ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Run every connection and the backfill workers until cancelled."""
        async with asyncio.TaskGroup() as group:
            self._group = group
            for number in range(self.settings.backfill_concurrency):
                group.create_task(self._backfill_worker(), name=f"feed-backfill-{number}")
            while True:
                self._layout_changed.clear()
                for connection in list(self._connections):
                    if not connection.wanted:
                        self._connections.remove(connection)
                        if connection.task is not None:
                            connection.task.cancel()
                    elif connection.task is None:
                        connection.task = group.create_task(
                            self._connection_loop(connection), name=f"feed-connection-{connection.number}"
                        )
                await self._layout_changed.wait()

    async def _connection_loop(self, connection: _Connection) -> None:
        attempt = 0
        while True:
            planned = False
            try:
                await self._serve(connection)
            except* _Reconnect as reasons:
                planned = True
                reason = reasons.exceptions[0]
                logger.info("reconnecting connection=%d reason=%s", connection.number, reason)
                if isinstance(reason, _Silent):
                    self.reachability.unreachable(f"streams: {reason}")
            except* (OSError, TimeoutError, ConnectionClosed, InvalidHandshake, InvalidURI) as errors:
                planned = False
                error = errors.exceptions[0]
                self._last_error = f"connection {connection.number}: {error!r}"
                self.reachability.unreachable(f"streams: {error!r}")
                self._log_once.warning(
                    f"ws-{connection.number}",
                    "stream connection lost connection=%d error=%r",
                    connection.number,
                    error,
                )
            finally:
                connection.socket = None
                connection.subscribed.clear()
            self._reconnects += 1
            if connection.last_message_at > connection.opened_at:
                attempt = 0  # it worked for a while: start the backoff again
            if not planned:
                await self.clock.sleep(self.settings.backoff.delay_secs(attempt))
                attempt += 1

    async def _serve(self, connection: _Connection) -> None:
        streams = sorted(connection.wanted)
        in_url: list[str] = []
        length = 0
        for name in streams:
            length += len(name) + 1
            if length > _MAX_URL_STREAM_CHARS:
                break
            in_url.append(name)
        url = f"{self.settings.ws_base_url.rstrip('/')}/stream?streams={'/'.join(in_url)}"
        async with self._connect(
            url,
            open_timeout=self.settings.open_timeout_secs,
            max_queue=None,
            ping_interval=20,
            ping_timeout=20,
        ) as socket:
            now = self.clock.monotonic()
            connection.socket, connection.opened_at = socket, now
            connection.last_message_at = now
            connection.subscribed = set(in_url)
            connection.stream_last_at = dict.fromkeys(connection.wanted, now)
            connection.changed.set()  # subscribe whatever did not fit in the URL
            # Backfill only now: whatever closes from here on arrives on this socket.
            for name in connection.wanted:
                if name in self._klines:
                    key = self._klines[name]
                    self.request_backfill(key, self.store.series(*key).last_open_time)
            async with asyncio.TaskGroup() as group:
                group.create_task(self._sync_subscriptions(connection, socket))
                group.create_task(self._watchdog(connection))
                await self._read(connection, socket)
                raise ConnectionError("the server closed the connection")

    async def _sync_subscriptions(self, connection: _Connection, socket: ClientConnection) -> None:
        while True:
            await connection.changed.wait()
            connection.changed.clear()
            for method, names in (
                ("UNSUBSCRIBE", connection.subscribed - connection.wanted),
                ("SUBSCRIBE", connection.wanted - connection.subscribed),
            ):
                if not names:
                    continue
                request_id = connection.next_request_id
                connection.next_request_id += 1
                await socket.send(json.dumps({"method": method, "params": sorted(names), "id": request_id}))
                if method == "SUBSCRIBE":
                    connection.subscribed |= names
                    now = self.clock.monotonic()
                    connection.stream_last_at.update(dict.fromkeys(names, now))
                else:
                    connection.subscribed -= names
                    for name in names:
                        connection.stream_last_at.pop(name, None)
                # Binance allows 5 incoming messages per second per connection.
                await self.clock.sleep(0.25)

    async def _watchdog(self, connection: _Connection) -> None:
        settings = self.settings
        period = min(1.0, settings.stale_after_secs / 4)
        while True:
            await self.clock.sleep(period)
            now = self.clock.monotonic()
            if now - connection.last_message_at > settings.stale_after_secs:
                raise _Silent(f"no message for {now - connection.last_message_at:.1f}s")
            if now - connection.opened_at > settings.max_connection_age_secs:
                raise _Reconnect("connection age limit")
            if settings.stream_stale_after_secs is not None:
                for name, last_at in connection.stream_last_at.items():
                    if name in self._klines and now - last_at > settings.stream_stale_after_secs:
                        raise _Silent(f"stream {name} silent for {now - last_at:.1f}s")

    async def _read(self, connection: _Connection, socket: ClientConnection) -> None:
        async for raw in socket:
            now = self.clock.monotonic()
            connection.last_message_at = self._last_message_at = now
            self._last_message_wall = self.clock.now()
            self.reachability.answered()
            try:
                message = parse_message(raw)
            except MalformedMessage as error:
                self._malformed += 1
                self._log_once.warning("malformed", "skipping a malformed stream message: %s", error)
                continue
            if isinstance(message, KlineUpdate | Ticker):
                self.market.observe(message.event_time_ms)
            if isinstance(message, KlineUpdate):
                name = kline_stream(message.symbol, message.interval)
                connection.stream_last_at[name] = now
                self._apply_kline(message)
            elif isinstance(message, Ticker):
                if ticker_stream(message.symbol) in self._tickers:
                    self.tickers.update(message)
            elif isinstance(message, ServerShutdown):
                raise _Reconnect("serverShutdown announced")
            elif isinstance(message, ControlReply) and message.error is not None:
                self._log_once.warning("control", "stream request failed id=%s error=%s", message.request_id,
                               message.error)  # fmt: skip

    def _apply_kline(self, update: KlineUpdate) -> None:
        key = (update.symbol, update.interval)
        if kline_stream(*key) not in self._klines:
            return  # a late message for a stream we just dropped
        series = self.store.series(*key)
        previous_open_ms = series.last_open_time
        result = series.upsert(
            update.open_time, update.open, update.high, update.low, update.close, update.volume,
            closed=update.closed, now_ms=int(self.market.now_ms()),
        )  # fmt: skip
        if result in (Upsert.GAP, Upsert.UNCONFIRMED):
            self.request_backfill(key, previous_open_ms)
        if update.closed and result is not Upsert.STALE:
            for listener in self._closed_listeners:
                try:
                    listener(update.symbol, update.interval, update.open_time)
                except Exception:  # a listener's bug must not stop the feed
                    logger.exception("kline closed listener failed symbol=%s interval=%s", *key)

    # Backfill --------------------------------------------------------------------------------------
    def request_backfill(self, key: KlineKey, from_ms: int | None = None) -> None:
        """Fetch candles over REST from open time `from_ms` up to now.

        Without `from_ms`: from the newest stored candle, or the newest `backfill_limit` while the series
        holds fewer (streamed candles may have arrived before the backfill of a new series ran).

        Requests for a series already waiting merge into one, from the older of the two starts.
        """
        if key in self._backfill_pending:
            pending = self._backfill_pending[key]
            if from_ms is not None:
                # None means "from the newest stored candle", which is never older than a given start.
                self._backfill_pending[key] = from_ms if pending is None else min(pending, from_ms)
            return
        self._backfill_pending[key] = from_ms
        self._backfill_queue.put_nowait(key)

    async def _backfill_worker(self) -> None:
        attempts: dict[KlineKey, int] = {}
        while True:
            key = await self._backfill_queue.get()
            from_ms = self._backfill_pending.pop(key, None)
            if kline_stream(*key) not in self._klines:
                continue
            try:
                await self._backfill(key, from_ms)
                attempts.pop(key, None)
            except RateLimited as error:
                await self._retry_later(key, from_ms, attempts, error, error.retry_after_secs)
            except TransientError as error:
                await self._retry_later(key, from_ms, attempts, error, None)
            except ConfigError as error:
                self._last_error = str(error)
                logger.error("giving up backfill symbol=%s interval=%s: %s", key[0], key[1], error)

    async def _retry_later(
        self,
        key: KlineKey,
        from_ms: int | None,
        attempts: dict[KlineKey, int],
        error: Exception,
        at_least_secs: float | None,
    ) -> None:
        attempt = attempts.get(key, 0)
        attempts[key] = attempt + 1
        delay = max(self.settings.backoff.delay_secs(attempt), at_least_secs or 0.0)
        self._last_error = str(error)
        self._log_once.warning(
            f"backfill-{key}", "backfill failed symbol=%s interval=%s retry_in_secs=%.1f error=%s",
            key[0], key[1], delay, error,
        )  # fmt: skip
        await self.clock.sleep(delay)
        self.request_backfill(key, from_ms)

    async def _backfill(self, key: KlineKey, from_ms: int | None) -> None:
        symbol, interval = key
        series = self.store.series(symbol, interval)
        limit = min(self.settings.backfill_limit, MAX_KLINES_PER_REQUEST)
        start_ms = from_ms
        if start_ms is None and len(series) >= min(limit, series.capacity):
            start_ms = series.last_open_time
        while True:
            rows = await self.source.fetch_klines(symbol, interval, start_ms=start_ms, limit=limit)
            if kline_stream(*key) not in self._klines:
                return
            last_page = len(rows) < limit or start_ms is None
            streamed_ms = series.last_open_time
            for index, row in enumerate(rows):
                # The newest row of the newest page may still be forming (unless the stream already
                # delivered a newer candle); the stream will close it.
                forming = last_page and index == len(rows) - 1
                closed = not forming or (streamed_ms is not None and row.open_time < streamed_ms)
                series.upsert(
                    row.open_time, row.open, row.high, row.low, row.close, row.volume, closed=closed,
                    now_ms=int(self.market.now_ms()),
                )  # fmt: skip
            if last_page or not rows:
                return
            start_ms = rows[-1].open_time
