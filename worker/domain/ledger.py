"""Position bookkeeping: average entry, realised and unrealised PnL and pnl_percent, exact through every fill.

The book keeps the exact quote cost of what is held (`cost_basis`). A partial reduction takes
`quantity * entry_price` off it (entry_price being the displayed average, cost/size rounded to
ENTRY_PRICE_QUANTUM, rounded down); a full close takes whatever cost is left. So realised PnL,
plus the open part's mark-to-market, always equals the position's cash flows exactly, whatever the
rounding of the average.
Gross PnL comes from prices; fees are kept apart in `fees_paid` and taken off in `net_pnl`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, Decimal

from worker.domain.enums import PositionSide
from worker.domain.money import HUNDRED, ZERO, exact
from worker.errors import InvariantViolation

ENTRY_PRICE_QUANTUM = Decimal("1e-12")
PERCENT_QUANTUM = Decimal("1e-8")


@dataclass(frozen=True, slots=True)
class Book:
    """The exact state of one position's quantity and money (all quote amounts in the quote asset)."""

    side: PositionSide
    size: Decimal
    cost_basis: Decimal
    entry_price: Decimal
    realized_pnl: Decimal
    fees_paid: Decimal
    entry_cost_total: Decimal  # every entry's cost ever (the base of pnl_percent)

    def __post_init__(self) -> None:
        if self.size < 0 or self.cost_basis < 0 or self.fees_paid < 0:
            raise InvariantViolation(f"negative book: {self}")

    @property
    def is_open(self) -> bool:
        return self.size > 0

    @property
    def sign(self) -> int:
        return 1 if self.side is PositionSide.LONG else -1


def _average(cost: Decimal, size: Decimal) -> Decimal:
    with exact():
        # Rounded down, so a partial reduction never releases more cost than the book holds.
        return (cost / size).quantize(ENTRY_PRICE_QUANTUM, ROUND_DOWN)


def add(book: Book | None, side: PositionSide, quantity: Decimal, cost: Decimal, fee: Decimal = ZERO) -> Book:
    """The book after receiving `quantity` for `cost` in quote (the general entry: a fee charged in the base
    asset shows up as fewer units for the same cost, with no separate quote fee)."""
    if quantity <= 0 or cost <= 0:
        raise InvariantViolation(f"an entry needs a positive quantity and cost, was {quantity} for {cost}")
    if book is None:
        return Book(side, quantity, cost, _average(cost, quantity), ZERO, fee, cost)
    with exact():
        total = book.cost_basis + cost
        size = book.size + quantity
        return replace(
            book,
            size=size,
            cost_basis=total,
            entry_price=_average(total, size),
            fees_paid=book.fees_paid + fee,
            entry_cost_total=book.entry_cost_total + cost,
        )


def open_book(side: PositionSide, quantity: Decimal, price: Decimal, fee: Decimal = ZERO) -> Book:
    """The book after the entry fill of `quantity` at `price` (fee in quote)."""
    if quantity <= 0 or price <= 0:
        raise InvariantViolation(f"an entry needs a positive quantity and price, was {quantity} @ {price}")
    with exact():
        cost = quantity * price
    return Book(side, quantity, cost, _average(cost, quantity), ZERO, fee, cost)


def increase(book: Book, quantity: Decimal, price: Decimal, fee: Decimal = ZERO) -> Book:
    """Scale in: add `quantity` bought (long) or sold (short) at `price`."""
    if quantity <= 0 or price <= 0:
        raise InvariantViolation(f"a scale-in needs a positive quantity and price, was {quantity} @ {price}")
    with exact():
        cost = book.cost_basis + quantity * price
        size = book.size + quantity
        return replace(
            book,
            size=size,
            cost_basis=cost,
            entry_price=_average(cost, size),
            fees_paid=book.fees_paid + fee,
            entry_cost_total=book.entry_cost_total + quantity * price,
        )


def reduce(book: Book, quantity: Decimal, price: Decimal, fee: Decimal = ZERO) -> tuple[Book, Decimal]:
    """Take `quantity` off at `price`; returns the new book and the gross PnL this fill realised.

    Taking off the whole size closes the book (size 0) and realises all the cost left.
    """
    if quantity <= 0 or price <= 0 or quantity > book.size:
        raise InvariantViolation(f"cannot reduce a position of {book.size} by {quantity} @ {price}")
    with exact():
        proceeds = quantity * price
        released = book.cost_basis if quantity == book.size else quantity * book.entry_price
        realized = (proceeds - released) * book.sign
        size = book.size - quantity
        cost = book.cost_basis - released
        return (
            replace(
                book,
                size=size,
                cost_basis=cost,
                entry_price=book.entry_price,
                realized_pnl=book.realized_pnl + realized,
                fees_paid=book.fees_paid + fee,
            ),
            realized,
        )


def unrealized_pnl(book: Book, mark_price: Decimal) -> Decimal:
    """Gross PnL of the open part if it were closed at `mark_price` (exact)."""
    with exact():
        return (book.size * mark_price - book.cost_basis) * book.sign


def net_pnl(book: Book, mark_price: Decimal | None = None) -> Decimal:
    """Realised plus (when a mark is given) unrealised PnL, less every fee paid."""
    with exact():
        open_part = unrealized_pnl(book, mark_price) if mark_price is not None and book.size else ZERO
        return book.realized_pnl + open_part - book.fees_paid


def pnl_percent(book: Book, mark_price: Decimal | None = None) -> Decimal:
    """Net PnL as a percentage of everything ever committed to the position (quantized to 1e-8)."""
    if book.entry_cost_total <= 0:
        return ZERO
    with exact():
        return (net_pnl(book, mark_price) * HUNDRED / book.entry_cost_total).quantize(PERCENT_QUANTUM)


def paper_cash_delta(book_before: Book | None, book_after: Book, price: Decimal, fee: Decimal) -> Decimal:
    """The paper balance change of one fill: entries reserve their cost, exits return cost plus PnL.

    Shorts are collateralised by their cost, so a paper balance is always cash plus open positions' cost.
    """
    before_size = book_before.size if book_before is not None else ZERO
    before_cost = book_before.cost_basis if book_before is not None else ZERO
    before_realized = book_before.realized_pnl if book_before is not None else ZERO
    with exact():
        if book_after.size > before_size:
            return -(book_after.cost_basis - before_cost) - fee
        released = before_cost - book_after.cost_basis
        realized = book_after.realized_pnl - before_realized
        return released + realized - fee
