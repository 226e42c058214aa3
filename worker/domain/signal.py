"""Signal values: a signal as the worker reads it back, and a signal with its analysis, ready to act on."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal

from worker.domain.enums import SignalStatus
from worker.domain.trader import Trader


@dataclass(frozen=True, slots=True)
class Signal:
    """A `signals` row: which trader's code matched which symbol at what price, and where it stands."""

    id: uuid.UUID
    trader_id: uuid.UUID
    symbol: str
    trigger_price: Decimal
    status: SignalStatus


@dataclass(frozen=True, slots=True)
class SignalContext:
    """A signal the engine recorded and had analysed: what the executor needs to act on its decision."""

    signal_id: uuid.UUID
    trader: Trader
    symbol: str
    trigger_price: Decimal
    last_price: Decimal
    analysis_id: uuid.UUID
