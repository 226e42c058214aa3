"""Keep the scheduler in step with this user's traders: Realtime changes plus a reconcile on every subscribe.

Realtime delivers at most once (no replay after a disconnect, nothing between the join and the server's
"Subscribed to PostgreSQL"), so the changes are treated as hints and the database as the truth: on every
(re)subscription, every "Subscribed to PostgreSQL", a forced reload, a dropped event and a slow safety
timer, the whole set of the user's traders is fetched through PostgREST and reconciled. Applying a change
or a snapshot is idempotent, so a duplicate or late event does no harm:
- a deleted trader's id is remembered (ids are never reused), so a late INSERT/UPDATE cannot revive it;
- an event older than what we hold (`updated_at`) is ignored.

The socket is supervised here rather than by realtime-py (which gives up after `max_retries`): each
session is a fresh client and channel, and any end of it (socket closed, join refused, channel error or
close) tears it down and reconnects after a jittered backoff, for ever. The sync is a Component of the
worker: running once the change stream is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol

from worker.clock import Clock
from worker.components import START_GRACE_SECS, ComponentState
from worker.db.client import MachineAuth
from worker.db.traders import TraderListing, TraderRows
from worker.domain.trader import Trader, TraderRowError
from worker.errors import ConfigError, InvariantViolation, RateLimited, TransientError, WorkerError
from worker.retry import Backoff

if TYPE_CHECKING:
    from realtime import AsyncRealtimeClient

logger = logging.getLogger(__name__)

_INBOX_SIZE: Final = 1000
# Join errors that mean the machine JWT itself is bad (supabase/realtime realtime_channel.ex).
_TOKEN_REFUSALS: Final = ("InvalidJWTToken", "JwtSignatureError", "MalformedJWT")
_RECONNECT_BACKOFF: Final = Backoff(base_secs=0.5, max_secs=30.0)


class TraderScheduler(Protocol):
    """Receives every change to the set of traders that alters what runs, in order, once each.

    The sync calls `add` once when it first sees a trader (in any status: only an active one runs),
    `update` when a running trader's definition changes, `pause` when a running trader stops being
    active (paused, or marked error), `resume` when a paused one becomes active again (the value carries
    its latest definition), and `remove` when it is deleted. Calls are awaited one at a time; an
    exception leaves the sync's view unchanged for that trader, so the next reconcile tries again.
    """

    async def add(self, trader: Trader) -> None: ...

    async def update(self, trader: Trader) -> None: ...

    async def pause(self, trader: Trader) -> None: ...

    async def resume(self, trader: Trader) -> None: ...

    async def remove(self, trader: Trader) -> None: ...


@dataclass(frozen=True, slots=True)
class TraderSyncSettings:
    realtime_url: str  # http(s)://<project>/realtime/v1 (realtime-py appends /websocket)
    user_id: uuid.UUID
    reconnect_backoff: Backoff = _RECONNECT_BACKOFF
    safety_reconcile_secs: float = 300.0
    join_timeout_secs: int = 10
    liveness_check_secs: float = 1.0


@dataclass(frozen=True, slots=True)
class ReconcileReport:
    traders: int
    added: int
    updated: int
    paused: int
    resumed: int
    removed: int
    unreadable: int


@dataclass(frozen=True, slots=True)
class _Change:
    type: str
    record: Mapping[str, Any] | None
    old_record: Mapping[str, Any] | None


_WAKE: Final = object()


class TraderSync:
    """Own the Realtime subscription to `traders` for one user and drive a TraderScheduler from it."""

    name = "trader-sync"

    def __init__(
        self,
        settings: TraderSyncSettings,
        traders: TraderRows,
        auth: MachineAuth,
        scheduler: TraderScheduler,
        *,
        clock: Clock,
    ) -> None:
        self._settings = settings
        self._rows = traders
        self._auth = auth
        self._scheduler = scheduler
        self._clock = clock
        self._started = clock.monotonic()
        self._known: dict[uuid.UUID, Trader] = {}
        self._deleted: set[uuid.UUID] = set()
        self._inbox: asyncio.Queue[_Change | object] = asyncio.Queue(maxsize=_INBOX_SIZE)
        self._reconcile_wanted = False
        self._waiters: list[asyncio.Future[ReconcileReport]] = []
        self._live = False
        self._refused: ConfigError | None = None
        self.reconciles = 0

    @property
    def traders(self) -> Mapping[uuid.UUID, Trader]:
        """The traders the scheduler has been told about, by id (read-only view)."""
        return MappingProxyType(self._known)

    @property
    def live(self) -> bool:
        """Subscribed, and the server said the change stream is running."""
        return self._live

    def state(self) -> ComponentState:
        if self._live:
            return ComponentState.RUNNING
        if self.reconciles == 0 or self._clock.monotonic() - self._started < START_GRACE_SECS:
            return ComponentState.STARTING
        return ComponentState.DEGRADED

    async def prepare_shutdown(self) -> None:
        return None

    async def run(self) -> None:
        """Run until cancelled. Raises ConfigError when Realtime or PostgREST refuses the machine JWT."""
        # Start from the database even while Realtime is unreachable; every subscribe reconciles again.
        self._request_reconcile("start")
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._consume(), name="trader-sync-consume")
            tasks.create_task(self._safety_net(), name="trader-sync-safety-net")
            await self._supervise()

    async def reload_traders(self) -> ReconcileReport:
        """Force a reconcile and wait for it (POST /reload-traders)."""
        waiter: asyncio.Future[ReconcileReport] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._request_reconcile("reload requested")
        return await waiter

    # Realtime session ---------------------------------------------------------------------------------
    async def _supervise(self) -> None:
        # Imported when first needed, which is after /health answers: not on the worker's start-up path.
        from realtime import AsyncRealtimeClient  # noqa: PLC0415

        attempt = 0
        while True:
            client = AsyncRealtimeClient(
                self._settings.realtime_url,
                token=self._auth.anon_key,
                auto_reconnect=False,
                timeout=self._settings.join_timeout_secs,
            )
            reached_live = False
            try:
                reached_live = await self._session(client)
            except Exception as error:  # any failure to connect or join ends the session alike
                logger.warning("realtime session failed user_id=%s error=%r", self._settings.user_id, error)
            finally:
                self._live = False
                with contextlib.suppress(Exception):
                    await client.close()
            if self._refused is not None:
                raise self._refused
            attempt = 0 if reached_live else attempt + 1
            delay_secs = self._settings.reconnect_backoff.delay_secs(attempt)
            logger.info("realtime reconnecting in %.2fs attempt=%d", delay_secs, attempt)
            await self._clock.sleep(delay_secs)

    async def _session(self, client: AsyncRealtimeClient) -> bool:
        """One socket and one channel, until either ends; True if the stream went live."""
        from realtime import RealtimePostgresChangesListenEvent, RealtimeSubscribeStates  # noqa: PLC0415

        ended = asyncio.Event()
        went_live = False

        def on_state(state: RealtimeSubscribeStates, error: Exception | None) -> None:
            nonlocal went_live
            if state == RealtimeSubscribeStates.SUBSCRIBED:
                went_live = True
                self._request_reconcile("subscribed")
            else:
                logger.warning("realtime channel state=%s error=%s", state.value, error)
                if error is not None and any(code in str(error) for code in _TOKEN_REFUSALS):
                    # Retrying cannot fix a token the server refuses: stop as misconfigured.
                    self._refused = ConfigError(f"Realtime refused the machine JWT: {error}")
                ended.set()

        def on_system(payload: Any) -> None:
            if payload.extension == "postgres_changes" and payload.status == "ok":
                self._live = True
                self._request_reconcile("change stream (re)started")

        await client.connect()
        sent_token = self._auth.token
        await client.set_auth(sent_token)
        channel = client.channel(f"trader-sync:{self._settings.user_id}")
        channel.on_postgres_changes(
            RealtimePostgresChangesListenEvent.All,
            self._on_change,
            table="traders",
            schema="public",
            filter=f"user_id=eq.{self._settings.user_id}",
        )
        channel.on_system(on_system)
        await channel.subscribe(on_state)
        while not ended.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.liveness_check_secs):
                    await ended.wait()
            if self._auth.token != sent_token and not ended.is_set():
                # Renewed by TokenRenewer: hand it to the channel (realtime-py sends access_token).
                sent_token = self._auth.token
                await client.set_auth(sent_token)
            # realtime-py runs its reader as a bare task: if a callback or a warning turned error kills it,
            # the socket looks connected but nothing arrives and nobody is told. Treat that as a drop.
            listener = getattr(client, "_listen_task", None)
            if isinstance(listener, asyncio.Task) and listener.done() and not ended.is_set():
                logger.warning("realtime-py's reader stopped without closing the socket; reconnecting")
                break
        return went_live

    def _on_change(self, payload: Mapping[str, Any]) -> None:
        # Called synchronously by realtime-py's listen task: queue and return.
        data = payload["data"]
        # realtime-py hands the type over as its own str enum; str() of that is the member's name.
        kind = data["type"]
        change = _Change(str(getattr(kind, "value", kind)), data.get("record"), data.get("old_record"))
        try:
            self._inbox.put_nowait(change)
        except asyncio.QueueFull:
            logger.warning("trader change inbox full; a reconcile will catch up")
            self._reconcile_wanted = True

    def _request_reconcile(self, reason: str) -> None:
        logger.info("trader reconcile requested reason=%s", reason)
        if self._reconcile_wanted:
            return
        self._reconcile_wanted = True
        with contextlib.suppress(asyncio.QueueFull):  # a full inbox is drained before the flag is seen
            self._inbox.put_nowait(_WAKE)

    async def _safety_net(self) -> None:
        while True:
            await self._clock.sleep(self._settings.safety_reconcile_secs)
            self._request_reconcile("safety timer")

    # Applying changes --------------------------------------------------------------------------------
    async def _consume(self) -> None:
        while True:
            item = await self._inbox.get()
            if self._reconcile_wanted:
                self._reconcile_wanted = False
                waiters, self._waiters = self._waiters, []
                report = await self._reconcile()
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(report)
            if isinstance(item, _Change):
                await self._apply_change(item)

    async def _reconcile(self) -> ReconcileReport:
        listing = await self._listing_until_done()
        counts = dict.fromkeys(("added", "updated", "paused", "resumed", "removed"), 0)
        fetched, unreadable = listing.traders, listing.unreadable
        for trader in fetched.values():
            self._deleted.discard(trader.id)
            if (action := await self._transition(self._known.get(trader.id), trader)) is not None:
                counts[action] += 1
        for trader_id in list(self._known.keys() - fetched.keys()):
            if str(trader_id) not in unreadable and await self._remove(trader_id):
                counts["removed"] += 1
        self.reconciles += 1
        report = ReconcileReport(traders=len(self._known), unreadable=len(unreadable), **counts)
        logger.info("traders reconciled user_id=%s report=%s", self._settings.user_id, report)
        return report

    async def _apply_change(self, change: _Change) -> None:
        if change.type == "DELETE":
            trader_id = _uuid((change.old_record or {}).get("id"))
            if trader_id is None:
                self._request_reconcile("DELETE without an id")
                return
            self._deleted.add(trader_id)
            await self._remove(trader_id)
            return
        try:
            trader = Trader.from_row(change.record or {})
        except TraderRowError as error:
            logger.error("ignoring a %s event: %s", change.type, error)
            return
        if trader.user_id != self._settings.user_id:
            logger.error("ignoring trader id=%s of another user user_id=%s", trader.id, trader.user_id)
            return
        previous = self._known.get(trader.id)
        if trader.id in self._deleted or (previous is not None and trader.updated_at < previous.updated_at):
            return  # late: the trader is gone, or we already hold a newer version
        await self._transition(previous, trader)

    async def _transition(self, previous: Trader | None, trader: Trader) -> str | None:
        """Tell the scheduler what changed between what it runs and `trader`; the action taken, if any."""
        if previous is None:
            action, call = "added", self._scheduler.add
        elif previous.is_active and trader.is_active:
            action, call = "updated", self._scheduler.update
            if previous.runs_like(trader):
                self._known[trader.id] = trader
                return None
        elif previous.is_active:
            action, call = "paused", self._scheduler.pause
        elif trader.is_active:
            action, call = "resumed", self._scheduler.resume
        else:
            self._known[trader.id] = trader  # still not running: nothing for the scheduler to do
            return None
        try:
            await call(trader)
        except (ConfigError, InvariantViolation):
            raise
        except Exception:
            # Keep the old view for this trader, so the next reconcile tries again.
            logger.exception("scheduler %s failed trader_id=%s", action, trader.id)
            return None
        self._known[trader.id] = trader
        logger.info("trader %s trader_id=%s status=%s", action, trader.id, trader.status.value)
        return action

    async def _remove(self, trader_id: uuid.UUID) -> bool:
        previous = self._known.get(trader_id)
        if previous is None:
            return False
        try:
            await self._scheduler.remove(previous)
        except (ConfigError, InvariantViolation):
            raise
        except Exception:
            logger.exception("scheduler remove failed trader_id=%s", trader_id)
            return False
        del self._known[trader_id]
        self._deleted.add(trader_id)
        logger.info("trader removed trader_id=%s", trader_id)
        return True

    # PostgREST ----------------------------------------------------------------------------------------
    async def _listing_until_done(self) -> TraderListing:
        attempt = 0
        while True:
            try:
                return await self._rows.listing()
            except TransientError as error:
                delay_secs = self._settings.reconnect_backoff.delay_secs(attempt)
                if isinstance(error, RateLimited) and error.retry_after_secs is not None:
                    delay_secs = max(delay_secs, error.retry_after_secs)
                logger.warning("fetching traders failed, retrying in %.2fs: %s", delay_secs, error)
                attempt += 1
                await self._clock.sleep(delay_secs)
            except ConfigError:
                raise
            except WorkerError as error:
                # Without the user's traders there is nothing to run: stop as misconfigured.
                raise ConfigError(f"{error} (check the machine JWT and anon key)") from error


def _uuid(value: object) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(value)) if value is not None else None
    except ValueError:
        return None
