"""The database gateway: the only code that talks to PostgREST.

    db = Database(rest_url, MachineAuth(anon_key, token), clock=clock)   # one HTTP client (client.py)
    tables = Tables.on(db, user_id)                                       # one module per table family

Modules: `client` (the HTTP client, and PostgREST's answers as WorkerError), `machine` (schema version,
heartbeat, the user's account), `traders` (the user's traders, report_trader_error), `signals` (the
signal lifecycle), `trading` (positions, orders and the paper account through the transition RPCs, and
the mapping between their rows and the trading values), `logs` (the machine's log lines).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from worker.db.client import Database
from worker.db.logs import LogRows
from worker.db.machine import MachineRows
from worker.db.signals import SignalRows, SignalStore
from worker.db.traders import TraderRows
from worker.db.trading import TradingRows, TradingStore


class TradingTables(Protocol):
    """The table families trading writes: `Tables` live, a backtest's memory store in a replay."""

    @property
    def signals(self) -> SignalStore: ...

    @property
    def trading(self) -> TradingStore: ...


@dataclass(frozen=True, slots=True)
class Tables:
    """Every table family, sharing one Database."""

    machine: MachineRows
    traders: TraderRows
    signals: SignalRows
    trading: TradingRows
    logs: LogRows

    @classmethod
    def on(cls, db: Database, user_id: uuid.UUID) -> Tables:
        return cls(
            MachineRows(db),
            TraderRows(db, user_id),
            SignalRows(db),
            TradingRows(db),
            LogRows(db),
        )
