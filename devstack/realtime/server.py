"""The Realtime server: WebSocket connections, Phoenix channels, and fan-out of WAL changes to subscribers."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from devstack.realtime import protocol
from devstack.realtime.bindings import BindingError, BindingSpec, RowFilter, binding_id
from devstack.realtime.database import Authorizer, Catalog, EncodedChange, RoleAccess, TableInfo
from devstack.realtime.protocol import Frame, FrameError, Serializer
from devstack.realtime.tokens import Claims, TokenRejected, TokenVerifier
from devstack.realtime.wal import DatabaseAddress, WalChange, WalStream, WalStreamError

logger = logging.getLogger(__name__)

SOCKET_PATHS = frozenset({"/realtime/v1/websocket", "/socket/websocket", "/websocket"})
MAX_CHANNELS_PER_CONNECTION = 100
IDLE_TIMEOUT_SECS = 60.0  # Phoenix closes a socket that sent nothing for 60 s
MAX_BATCH_CHANGES = 500
SUBSCRIBED_MESSAGE = "Subscribed to PostgreSQL"
SLOT_PREFIX = "devstack_realtime_"  # + port: the slot each server owns by default
SWEEP_INTERVAL_SECS = 0.5  # a revoked machine token's channels close within this (plus one check)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str
    port: int
    database: DatabaseAddress
    jwks: dict[str, Any]
    slot_name: str
    recvlogical_bin: Path
    max_frame_bytes: int = 1024 * 1024
    max_outbox_frames: int = 10_000  # a client further behind than this is disconnected (1013)
    send_timeout_secs: float = 10.0  # a client that takes no bytes for this long is dropped


@dataclass(slots=True)
class Subscription:
    """A binding that passed validation, bound to its table's column types."""

    binding: BindingSpec
    row_filter: RowFilter | None


@dataclass(eq=False, slots=True)
class Channel:
    connection: Connection
    topic: str
    join_ref: str | None
    token: str
    claims: Claims
    bindings: list[BindingSpec]
    subscriptions: list[Subscription] = field(default_factory=list)
    topic_json: str = ""
    open: bool = True

    @property
    def sub_topic(self) -> str:
        return self.topic.removeprefix("realtime:")


class Connection:
    """One client socket: its serializer, its channels, and an outbox drained by its own writer."""

    def __init__(
        self,
        websocket: ServerConnection,
        serializer: Serializer,
        token: str,
        claims: Claims,
        *,
        max_outbox_frames: int,
        send_timeout_secs: float,
    ) -> None:
        self.websocket = websocket
        self.serializer = serializer
        self.token = token
        self.claims = claims
        self.channels: dict[str, Channel] = {}
        self.last_seen_monotonic = time.monotonic()
        self._outbox: collections.deque[str] = collections.deque()
        self._wakeup = asyncio.Event()
        self._close: tuple[int, str] | None = None
        self._max_outbox_frames = max_outbox_frames
        self._send_timeout_secs = send_timeout_secs

    @property
    def closing(self) -> bool:
        return self._close is not None

    def send(self, frame: Frame) -> None:
        self.send_text(self.serializer.encode(frame))

    def send_text(self, text: str) -> None:
        if self._close is not None:
            return
        if len(self._outbox) >= self._max_outbox_frames:
            logger.warning("closing a client that fell %d frames behind", len(self._outbox))
            self._outbox.clear()
            self.close_later(protocol.CLOSE_TRY_AGAIN_LATER, "client too slow: outbox full")
            return
        self._outbox.append(text)
        self._wakeup.set()

    def close_later(self, code: int, reason: str) -> None:
        """Close after the frames already queued (replies that explain the close) have gone out."""
        if self._close is None:
            self._close = (code, reason[:120])
            self._wakeup.set()

    async def write_loop(self) -> None:
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                while self._outbox:
                    text = self._outbox.popleft()
                    async with asyncio.timeout(self._send_timeout_secs):
                        await self.websocket.send(text)
                if self._close is not None:
                    await self.websocket.close(*self._close)
                    return
        except TimeoutError:
            logger.warning("dropping a client that stopped reading")
            self.websocket.transport.abort()
        except ConnectionClosed:
            pass


def _json_response(status: HTTPStatus, body: dict[str, Any]) -> Response:
    data = json.dumps(body).encode()
    headers = Headers([("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return Response(status.value, status.phrase, headers, data)


class RealtimeServer:
    """Serve the Phoenix socket and deliver postgres_changes read from the WAL."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._catalog = Catalog(config.database)
        self._tokens = TokenVerifier(config.jwks)
        self._authorizer = Authorizer(config.database)
        self._wal = WalStream(config.database, config.slot_name, config.recvlogical_bin)
        self._changes: asyncio.Queue[WalChange] = asyncio.Queue(maxsize=10_000)
        self._connections: set[Connection] = set()
        # (schema, table or "*") -> channel -> its subscriptions on that table
        self._index: dict[tuple[str, str], dict[Channel, list[Subscription]]] = {}
        self._wal_ready = asyncio.Event()
        self._server: Server | None = None
        self.bound_port: int | None = None

    @property
    def ready(self) -> asyncio.Event:
        return self._wal_ready

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    # Lifecycle ----------------------------------------------------------------------------------------
    async def run(self, started: asyncio.Event | None = None) -> None:
        """Serve until cancelled; then close every socket with 1012 and drop the replication slot.

        The port is bound before the slot is touched, so a second server started by mistake on a busy
        port fails without disturbing the first one's slot.
        """
        try:
            async with serve(
                self._handle_connection,
                self.config.host,
                self.config.port,
                process_request=self._process_request,
                compression=None,
                max_size=self.config.max_frame_bytes,
                server_header=None,
            ) as server:
                self._server = server
                self.bound_port = next(iter(server.sockets)).getsockname()[1]
                try:
                    async with asyncio.TaskGroup() as tasks:
                        tasks.create_task(self._wal_loop(), name="realtime-wal")
                        await self._wal_ready.wait()
                        tasks.create_task(self._dispatch_loop(), name="realtime-dispatch")
                        tasks.create_task(self._sweep_loop(), name="realtime-sweep")
                        logger.info(
                            "realtime listening port=%d slot=%s", self.bound_port, self._wal.slot_name
                        )
                        if started is not None:
                            started.set()
                        await server.serve_forever()
                finally:
                    await self._close_connections()
        finally:
            await self._catalog.close()
            await self._authorizer.close()
            if self._server is not None:  # we owned the slot only if we got the port
                try:
                    await asyncio.wait_for(self._wal.drop_slot(), 10)
                except (psycopg.Error, OSError, TimeoutError, WalStreamError) as error:
                    logger.warning("could not drop slot=%s: %s", self._wal.slot_name, error)

    async def _close_connections(self) -> None:
        # 1012 (service restart): realtime-py and realtime-js reconnect on it.
        closing = [
            connection.websocket.close(protocol.CLOSE_SERVICE_RESTART, "server restarting")
            for connection in self._connections
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), 3)

    async def _wal_loop(self) -> None:
        delay_secs = 0.5
        first = True
        while True:
            started = time.monotonic()
            try:
                if first and self._wal.slot_name.startswith(SLOT_PREFIX):
                    for name in await self._wal.drop_orphaned_slots(SLOT_PREFIX):
                        logger.warning("dropped slot=%s left by a server that was killed", name)
                await self._wal.recreate_slot()
                if not first:
                    # Changes were lost while the stream was down: say so as the real server does after
                    # its replication connection returns, so clients re-read what they hold.
                    self._announce_subscribed()
                first = False
                self._wal_ready.set()
                await self._wal.stream(self._changes.put)
            except (WalStreamError, psycopg.Error, OSError) as error:
                logger.error("wal stream stopped, restarting in %.1fs: %s", delay_secs, error)
            self._wal_ready.clear()
            await asyncio.sleep(delay_secs)
            delay_secs = 0.5 if time.monotonic() - started > 30 else min(delay_secs * 2, 10.0)

    def _announce_subscribed(self) -> None:
        for connection in self._connections:
            for channel in connection.channels.values():
                if channel.subscriptions:
                    self._push_system(channel, "postgres_changes", "ok", SUBSCRIBED_MESSAGE)

    async def _sweep_loop(self) -> None:
        """Close channels whose token expired or was revoked, and sockets that went silent."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_SECS)
            now_secs, now_monotonic = time.time(), time.monotonic()
            for connection in list(self._connections):
                if now_monotonic - connection.last_seen_monotonic > IDLE_TIMEOUT_SECS:
                    connection.close_later(1000, "no heartbeat for 60s")
                    continue
                for channel in list(connection.channels.values()):
                    if channel.claims.exp <= now_secs:
                        expired_secs = int(now_secs - channel.claims.exp)
                        self._shutdown_channel(channel, f"Token has expired {expired_secs} seconds ago")
            try:
                await self._close_revoked_channels()
            except psycopg.Error as error:
                logger.error("token re-check failed: %s", error)

    async def _close_revoked_channels(self) -> None:
        """Ask the pre-request hook again about each machine token in use (a machine destroyed or replaced
        since its join loses its channels here; its rows stopped passing RLS at once)."""
        by_claims: dict[str, list[Channel]] = {}
        for connection in list(self._connections):
            for channel in connection.channels.values():
                if channel.claims.role == "trader_machine":
                    by_claims.setdefault(channel.claims.claims_json, []).append(channel)
        for channels in by_claims.values():
            refusal = await self._catalog.request_refusal(channels[0].claims)
            if refusal is None:
                continue
            for channel in channels:
                if channel.open:
                    self._shutdown_channel(channel, refusal)

    # HTTP and sockets -----------------------------------------------------------------------------
    async def _process_request(  # noqa: PLR0911 - one answer per way a request can be refused
        self, websocket: ServerConnection, request: Request
    ) -> Response | None:
        url = urlsplit(request.path)
        if url.path in ("/health", "/socket/health", "/realtime/v1/health"):
            if self._wal_ready.is_set():
                return _json_response(HTTPStatus.OK, {"status": "ok"})
            return _json_response(HTTPStatus.SERVICE_UNAVAILABLE, {"status": "starting"})
        if url.path not in SOCKET_PATHS:
            return _json_response(
                HTTPStatus.NOT_FOUND, {"error": f"no route {url.path}: use /socket/websocket"}
            )
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            return _json_response(HTTPStatus.UPGRADE_REQUIRED, {"error": "expected a WebSocket upgrade"})
        query = parse_qs(url.query)
        if protocol.serializer_for(query.get("vsn", [None])[0]) is None:
            return _json_response(HTTPStatus.BAD_REQUEST, {"error": "unsupported vsn: use 1.0.0 or 2.0.0"})
        token = request.headers.get("x-api-key") or query.get("apikey", [None])[0]
        if not token:
            return _json_response(HTTPStatus.UNAUTHORIZED, {"error": "No API key found in request"})
        try:
            await self._verify(token)
        except TokenRejected as rejection:
            return _json_response(HTTPStatus.FORBIDDEN, {"error": rejection.reason})
        except psycopg.Error as error:
            logger.error("token check failed: %s", error)
            return _json_response(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "database unavailable"})
        return None

    async def _verify(self, token: object) -> Claims:
        """Check a token as PostgREST does: signature, expiry, an issued role, then its pre-request hook
        (which refuses a destroyed or replaced machine's token). Raises TokenRejected."""
        claims = self._tokens.verify(token, time.time())
        refusal = await self._catalog.request_refusal(claims)
        if refusal is not None:
            raise TokenRejected("Unauthorized", refusal)
        return claims

    async def _handle_connection(self, websocket: ServerConnection) -> None:
        request = websocket.request
        assert request is not None
        query = parse_qs(urlsplit(request.path).query)
        token = request.headers.get("x-api-key") or query["apikey"][0]
        serializer = protocol.serializer_for(query.get("vsn", [None])[0])
        assert serializer is not None
        claims = self._tokens.verify(token, time.time())
        connection = Connection(
            websocket,
            serializer,
            token,
            claims,
            max_outbox_frames=self.config.max_outbox_frames,
            send_timeout_secs=self.config.send_timeout_secs,
        )
        self._connections.add(connection)
        try:
            async with asyncio.TaskGroup() as tasks:
                writer = tasks.create_task(connection.write_loop(), name="realtime-writer")
                await self._read_loop(connection, tasks)
                if not writer.done():
                    connection.close_later(1000, "bye")
        finally:
            self._connections.discard(connection)
            for channel in list(connection.channels.values()):
                self._drop_channel(channel)

    async def _read_loop(self, connection: Connection, tasks: asyncio.TaskGroup) -> None:
        try:
            async for message in connection.websocket:
                connection.last_seen_monotonic = time.monotonic()
                if isinstance(message, bytes):
                    connection.close_later(protocol.CLOSE_UNSUPPORTED_DATA, "binary frames are not supported")
                    return
                try:
                    frame = connection.serializer.decode(message)
                except FrameError as error:
                    logger.info("closing a socket that sent a malformed frame: %s", error)
                    connection.close_later(protocol.CLOSE_INVALID_FRAME, f"malformed frame: {error}")
                    return
                await self._handle_frame(connection, frame, tasks)
                if connection.closing:
                    return
        except ConnectionClosed:
            return

    # Channel protocol -------------------------------------------------------------------------------
    async def _handle_frame(self, connection: Connection, frame: Frame, tasks: asyncio.TaskGroup) -> None:
        if frame.topic == protocol.PHOENIX_TOPIC:
            if frame.event == "heartbeat":
                connection.send(protocol.reply(frame, "ok", {}))
            else:
                connection.send(protocol.reply(frame, "error", {"reason": "unmatched topic"}))
            return
        if frame.event == "phx_join":
            await self._join(connection, frame, tasks)
            return
        channel = connection.channels.get(frame.topic)
        if channel is None:
            connection.send(protocol.reply(frame, "error", {"reason": "unmatched topic"}))
            return
        if frame.event == "phx_leave":
            connection.send(protocol.reply(frame, "ok", {}, join_ref=channel.join_ref))
            self._close_channel(channel)
        elif frame.event == "access_token":
            await self._refresh_token(channel, frame.payload.get("access_token"), tasks)
        else:
            # The real server ignores what it does not handle (broadcast and presence are not offered here).
            logger.info("ignoring event=%s on topic=%s", frame.event, frame.topic)

    async def _join(self, connection: Connection, frame: Frame, tasks: asyncio.TaskGroup) -> None:
        if not frame.topic.startswith("realtime:"):
            connection.send(protocol.reply(frame, "error", {"reason": "unmatched topic"}))
            return
        if frame.topic == "realtime:":
            connection.send(
                protocol.reply(frame, "error", {"reason": "TopicNameRequired: You must provide a topic name"})
            )
            return
        payload = frame.payload
        raw_token = payload.get("access_token") or payload.get("user_token")
        token = (
            connection.token if not isinstance(raw_token, str) or raw_token.startswith("sb_") else raw_token
        )
        try:
            claims = await self._verify(token)
        except TokenRejected as rejection:
            connection.send(protocol.reply(frame, "error", {"reason": rejection.reason}))
            return
        except psycopg.Error as database_error:
            logger.error("token check failed topic=%s: %s", frame.topic, database_error)
            reason = "UnableToConnectToProject: Realtime was unable to connect to the project database"
            connection.send(protocol.reply(frame, "error", {"reason": reason}))
            return
        previous = connection.channels.get(frame.topic)
        if previous is None and len(connection.channels) >= MAX_CHANNELS_PER_CONNECTION:
            connection.send(
                protocol.reply(frame, "error", {"reason": "ChannelRateLimitReached: Too many channels"})
            )
            return
        config = payload.get("config")
        requested = config.get("postgres_changes") if isinstance(config, dict) else None
        params_list = (
            [params for params in requested if params is not None] if isinstance(requested, list) else []
        )
        bindings: list[BindingSpec] = []
        error: str | None = None
        for params in params_list:
            try:
                bindings.append(BindingSpec.parse(params))
            except BindingError as binding_error:
                error = error or str(binding_error)
        echo = [
            {**params, "id": binding_id(params)} if isinstance(params, dict) else params
            for params in params_list
        ]
        channel = Channel(connection, frame.topic, frame.join_ref, token, claims, bindings)
        channel.topic_json = json.dumps(frame.topic)
        connection.channels[frame.topic] = channel
        connection.send(protocol.reply(frame, "ok", {"postgres_changes": echo}, join_ref=frame.join_ref))
        if previous is not None:
            # Phoenix stops the old channel of a duplicate join after replying to the new one.
            previous.open = False
            self._unindex(previous)
            connection.send(Frame(previous.join_ref, previous.join_ref, previous.topic, "phx_close", {}))
        if error is not None:
            self._push_system(channel, "postgres_changes", "error", error)
        elif bindings:
            tasks.create_task(self._subscribe(channel), name=f"realtime-subscribe {frame.topic}")

    async def _refresh_token(self, channel: Channel, token: object, tasks: asyncio.TaskGroup) -> None:
        # The real server never replies; the same token, null or an sb_ key are ignored.
        if not isinstance(token, str) or token.startswith("sb_") or token == channel.token:
            return
        try:
            claims = await self._verify(token)
        except TokenRejected as rejection:
            self._shutdown_channel(channel, rejection.message)
            return
        except psycopg.Error as error:
            logger.error("token check failed topic=%s: %s", channel.topic, error)
            return
        channel.token, channel.claims = token, claims
        if channel.bindings:
            tasks.create_task(self._subscribe(channel), name=f"realtime-resubscribe {channel.topic}")

    async def _subscribe(self, channel: Channel) -> None:
        """Validate the bindings against the database, start delivering, then say so (system message)."""
        try:
            published = await self._catalog.published_tables(fresh=True)
            subscriptions = []
            for binding in channel.bindings:
                subscriptions.append(await self._subscription(binding, published))
        except BindingError as error:
            if channel.open:
                self._push_system(channel, "postgres_changes", "error", str(error))
            return
        except psycopg.Error as error:
            logger.error("subscribe failed topic=%s: %s", channel.topic, error)
            if channel.open:
                self._push_system(
                    channel,
                    "postgres_changes",
                    "error",
                    "Realtime was unable to connect to the project database",
                )
            return
        if not channel.open:
            return
        self._unindex(channel)
        channel.subscriptions = subscriptions
        for subscription in subscriptions:
            key = (subscription.binding.schema, subscription.binding.table)
            self._index.setdefault(key, {}).setdefault(channel, []).append(subscription)
        self._push_system(channel, "postgres_changes", "ok", SUBSCRIBED_MESSAGE)

    async def _subscription(
        self, binding: BindingSpec, published: frozenset[tuple[str, str]]
    ) -> Subscription:
        unable = (
            "Unable to subscribe to changes with given parameters. Please check Realtime is enabled "
            f"for the given connect parameters: {binding.describe()}"
        )
        if binding.table == "*":
            if binding.filter is not None or not any(schema == binding.schema for schema, _ in published):
                raise BindingError(unable)
            return Subscription(binding, None)
        if (binding.schema, binding.table) not in published:
            raise BindingError(unable)
        table = await self._catalog.table(binding.schema, binding.table, fresh=True)
        if table is None:
            raise BindingError(unable)
        if binding.filter is None:
            return Subscription(binding, None)
        try:
            return Subscription(binding, await self._catalog.row_filter(table, binding.filter))
        except BindingError as error:
            raise BindingError(
                "Unable to subscribe to changes with given parameters. An exception happened so please "
                f"check your connect parameters: {binding.describe()}. Exception: {error}"
            ) from error

    def _push_system(self, channel: Channel, extension: str, status: str, message: str) -> None:
        payload = {"channel": channel.sub_topic, "extension": extension, "message": message, "status": status}
        channel.connection.send(Frame(channel.join_ref, None, channel.topic, "system", payload))

    def _shutdown_channel(self, channel: Channel, message: str) -> None:
        """A channel-level error: a system error, then phx_close (the client does not rejoin)."""
        self._push_system(channel, "system", "error", message)
        self._close_channel(channel)

    def _close_channel(self, channel: Channel) -> None:
        channel.connection.send(Frame(channel.join_ref, channel.join_ref, channel.topic, "phx_close", {}))
        self._drop_channel(channel)

    def _drop_channel(self, channel: Channel) -> None:
        channel.open = False
        self._unindex(channel)
        if channel.connection.channels.get(channel.topic) is channel:
            del channel.connection.channels[channel.topic]

    def _unindex(self, channel: Channel) -> None:
        for subscription in channel.subscriptions:
            key = (subscription.binding.schema, subscription.binding.table)
            subscribers = self._index.get(key)
            if subscribers is not None:
                subscribers.pop(channel, None)
                if not subscribers:
                    del self._index[key]
        channel.subscriptions = []

    # Delivery ---------------------------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        while True:
            batch = [await self._changes.get()]
            while len(batch) < MAX_BATCH_CHANGES and not self._changes.empty():
                batch.append(self._changes.get_nowait())
            try:
                await self._dispatch(batch)
            except psycopg.Error as error:
                # At most once, like the real server: this batch is lost, the next one is tried afresh.
                logger.error("dropping %d changes after a database error: %s", len(batch), error)
                await self._authorizer.close()

    async def _dispatch(self, batch: list[WalChange]) -> None:
        if not self._index:
            return
        published = await self._catalog.published_tables()
        by_table: dict[tuple[str, str], list[int]] = {}
        for position, change in enumerate(batch):
            key = (change.schema, change.table)
            if key in published and (key in self._index or (change.schema, "*") in self._index):
                by_table.setdefault(key, []).append(position)
        if not by_table:
            return
        await self._authorizer.await_visible(batch)
        outgoing: list[list[tuple[Channel, str]]] = [[] for _ in batch]
        for (schema, name), positions in by_table.items():
            table = await self._catalog.table(schema, name)
            if table is None:
                continue
            subscribers: dict[Channel, list[Subscription]] = {}
            for key in ((schema, name), (schema, "*")):
                for channel, subscriptions in self._index.get(key, {}).items():
                    subscribers.setdefault(channel, []).extend(subscriptions)
            for position, channel, text in await self._deliveries(
                table, [batch[p] for p in positions], subscribers
            ):
                outgoing[positions[position]].append((channel, text))
        for frames in outgoing:  # commit order, whatever the table
            for channel, text in frames:
                if channel.open:
                    channel.connection.send_text(text)

    async def _deliveries(
        self, table: TableInfo, changes: list[WalChange], subscribers: dict[Channel, list[Subscription]]
    ) -> list[tuple[int, Channel, str]]:
        access: dict[str, RoleAccess] = {}
        for channel in subscribers:
            if channel.claims.role not in access:
                access[channel.claims.role] = await self._catalog.role_access(channel.claims.role, table)
        hidden_sets = list(dict.fromkeys([frozenset[str](), *(a.hidden_columns for a in access.values())]))
        encoded = await self._authorizer.encode(table, changes, hidden_sets)
        # Which bindings of which channel match each change (event and filter), before RLS.
        candidates: dict[Channel, dict[int, list[int]]] = {}
        for channel, subscriptions in subscribers.items():
            for index, item in enumerate(encoded):
                ids = _matching_ids(item, subscriptions)
                if ids:
                    candidates.setdefault(channel, {})[index] = ids
        groups: dict[str, tuple[Claims, list[Channel], set[int]]] = {}
        for channel, matches in candidates.items():
            group = groups.setdefault(channel.claims.claims_json, (channel.claims, [], set()))
            group[1].append(channel)
            group[2].update(matches)
        ordered = [(claims, channels, sorted(indexes)) for claims, channels, indexes in groups.values()]
        visible = await self._authorizer.visible(
            table,
            [(claims, access[claims.role], [changes[i] for i in indexes]) for claims, _, indexes in ordered],
        )
        texts: dict[tuple[int, int], str] = {}
        deliveries = []
        for (claims, channels, indexes), seen in zip(ordered, visible, strict=True):
            variant = hidden_sets.index(access[claims.role].hidden_columns)
            for local in seen:
                index = indexes[local]
                key = (index, variant)
                if key not in texts:
                    texts[key] = _data_json(table, encoded[index], variant, hidden_sets[variant])
                for channel in channels:
                    matched = candidates[channel].get(index)
                    if matched:
                        payload = f'{{"ids":{json.dumps(matched)},"data":{texts[key]}}}'
                        text = channel.connection.serializer.encode_push(
                            channel.topic_json, "postgres_changes", payload
                        )
                        deliveries.append((index, channel, text))
        deliveries.sort(key=lambda delivery: delivery[0])
        return deliveries


def _matching_ids(item: EncodedChange, subscriptions: Iterable[Subscription]) -> list[int]:
    action = item.change.action
    # A filter is checked against the new row, or the old one for a DELETE (is_visible_through_filters).
    image = item.old_row if action == "DELETE" else item.new_row
    ids: list[int] = []
    for subscription in subscriptions:
        binding = subscription.binding
        if binding.event not in ("*", action):
            continue
        if subscription.row_filter is not None and not subscription.row_filter.matches(image):
            continue
        if binding.id not in ids:
            ids.append(binding.id)
    return ids


def _data_json(table: TableInfo, item: EncodedChange, variant: int, hidden: frozenset[str]) -> str:
    change = item.change
    record, old_record = item.variants[variant]
    columns = json.dumps(
        [{"name": c.name, "type": c.type_name} for c in table.columns if c.name not in hidden],
        separators=(",", ":"),
    )
    parts = [
        f'"schema":{json.dumps(change.schema)}',
        f'"table":{json.dumps(change.table)}',
        f'"commit_timestamp":"{change.commit_timestamp}"',
        f'"type":"{change.action}"',
        f'"columns":{columns}',
    ]
    if record is not None:
        parts.append(f'"record":{record}')
    if old_record is not None:
        parts.append(f'"old_record":{old_record}')
    parts.append('"errors":null')
    return "{" + ",".join(parts) + "}"
