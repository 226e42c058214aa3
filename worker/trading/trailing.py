"""Exit rules: stop-loss, take-profit and trailing stops (percent or ATR multiple), for longs and shorts.

Pure functions the position monitor calls on every price; a trailing stop ratchets only in the position's
favour: up for a long, down for a short.
"""

from __future__ import annotations

from decimal import Decimal

from worker.domain.enums import PositionSide
from worker.domain.money import ONE, exact
from worker.domain.positions import CloseReason, TrailingMode, TrailingSpec, TrailingState


def advance(
    side: PositionSide, spec: TrailingSpec, state: TrailingState, price: Decimal, atr: Decimal | None = None
) -> TrailingState:
    """The trailing state after seeing `price` (unchanged until activation, or in ATR mode without an ATR)."""
    long = side is PositionSide.LONG
    if state.reference_price is None:
        activation = spec.activation_price
        if activation is not None and (price < activation if long else price > activation):
            return state
        reference = price
    else:
        reference = max(state.reference_price, price) if long else min(state.reference_price, price)
    with exact():
        if spec.mode is TrailingMode.PERCENT:
            candidate = reference * (ONE - spec.distance) if long else reference * (ONE + spec.distance)
        elif atr is not None and atr > 0:
            offset = spec.distance * atr
            candidate = reference - offset if long else reference + offset
        else:
            candidate = None
    stop = state.stop_price
    if candidate is not None and candidate > 0:
        stop = candidate if stop is None else (max(stop, candidate) if long else min(stop, candidate))
    if reference == state.reference_price and stop == state.stop_price:
        return state
    return TrailingState(reference, stop)


def crossed(side: PositionSide, level: Decimal | None, price: Decimal, *, protective: bool) -> bool:
    """Whether `price` reached `level`: a protective level (stop) from the loss side, a target from above."""
    if level is None:
        return False
    long = side is PositionSide.LONG
    if protective:
        return price <= level if long else price >= level
    return price >= level if long else price <= level


def exit_reason(
    side: PositionSide,
    price: Decimal,
    stop_loss: Decimal | None,
    take_profit: Decimal | None,
    trailing_stop: Decimal | None,
) -> CloseReason | None:
    """Which exit `price` triggers, if any (the stop-loss first: it is the one that must never be missed)."""
    if crossed(side, stop_loss, price, protective=True):
        return CloseReason.STOP_LOSS
    if crossed(side, take_profit, price, protective=False):
        return CloseReason.TAKE_PROFIT
    if crossed(side, trailing_stop, price, protective=True):
        return CloseReason.TRAILING_STOP
    return None
