"""Partial-close and scale-in arithmetic (hypothesis): exact cash conservation, average entry, pnl_percent."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from worker.domain.enums import PositionSide
from worker.domain.ledger import (
    ENTRY_PRICE_QUANTUM,
    add,
    net_pnl,
    open_book,
    paper_cash_delta,
    pnl_percent,
    reduce,
)
from worker.domain.money import SymbolRules, exact

prices = st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("200000"), places=4)
quantities = st.decimals(min_value=Decimal("0.00001"), max_value=Decimal("50"), places=5)
fractions = st.decimals(min_value=Decimal("0.01"), max_value=Decimal("0.99"), places=2)
steps = st.lists(
    st.tuples(st.sampled_from(["in", "out"]), quantities, prices, fractions), min_size=1, max_size=12
)


@settings(max_examples=300, deadline=None)
@given(
    side=st.sampled_from(list(PositionSide)), entry=st.tuples(quantities, prices), steps=steps, mark=prices
)
def test_pnl_equals_the_cash_flows_exactly(
    side: PositionSide,
    entry: tuple[Decimal, Decimal],
    steps: list[tuple[str, Decimal, Decimal, Decimal]],
    mark: Decimal,
) -> None:
    sign = 1 if side is PositionSide.LONG else -1
    quantity, price = entry
    book = open_book(side, quantity, price, fee=Decimal("0.01"))
    with exact():
        cash = -quantity * price * sign  # what entries paid (long) or received (short)
        fees = Decimal("0.01")
        cash_balance = paper_cash_delta(None, book, price, Decimal("0.01"))
        for kind, size, fill, fraction in steps:
            before = book
            if kind == "in":
                book = add(book, side, size, size * fill, Decimal("0.02"))
                cash -= size * fill * sign
                fees += Decimal("0.02")
                cash_balance += paper_cash_delta(before, book, fill, Decimal("0.02"))
            else:
                taken = (book.size * fraction).quantize(Decimal("0.00001")) or book.size
                book, realized = reduce(book, min(taken, book.size), fill, Decimal("0.03"))
                cash += min(taken, before.size) * fill * sign
                fees += Decimal("0.03")
                cash_balance += paper_cash_delta(before, book, fill, Decimal("0.03"))
                assert (
                    realized
                    == (
                        min(taken, before.size) * fill
                        - (
                            before.cost_basis
                            if book.size == 0
                            else min(taken, before.size) * before.entry_price
                        )
                    )
                    * sign
                )
            if book.size == 0:
                break
            # An entry sets the average to the exact cost over size, rounded down to the quantum; an exit
            # keeps it (and the cost left never falls below size x average).
            assert book.cost_basis / book.size >= book.entry_price
            if kind == "in":
                assert book.cost_basis / book.size - book.entry_price < ENTRY_PRICE_QUANTUM
            else:
                assert book.entry_price == before.entry_price
        # Realised plus the open part at the mark, less fees, is exactly what the cash flows say.
        assert net_pnl(book, mark) == cash + book.size * mark * sign - fees
        # The paper balance moved by the net PnL minus what the open part still holds as collateral.
        assert (
            cash_balance
            == net_pnl(book, mark) - (book.size * mark - book.cost_basis) * sign - book.cost_basis
        )
        if book.entry_cost_total:
            assert pnl_percent(book, mark) == (net_pnl(book, mark) * 100 / book.entry_cost_total).quantize(
                Decimal("1e-8")
            )


@settings(max_examples=200, deadline=None)
@given(quantity=st.decimals(min_value=Decimal(0), max_value=Decimal(100), places=9), price=prices)
def test_lot_rounding_never_rounds_up_and_lands_on_the_grid(quantity: Decimal, price: Decimal) -> None:
    rules = SymbolRules(
        "BTCUSDT", "BTC", "USDT", Decimal("0.01"), Decimal("0.01"), Decimal(1000000), Decimal("0.00001"),
        Decimal("0.00001"), Decimal(9000), Decimal(100), Decimal(5), Decimal(9000000),
    )  # fmt: skip
    rounded = rules.quantity(quantity)
    assert rounded <= quantity
    assert rounded == 0 or (rounded - rules.min_qty) % rules.step_size == 0
    assert quantity - rounded < rules.step_size or rounded == 0
    assert rules.price(price) % rules.tick_size == 0
