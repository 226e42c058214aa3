"""The matching engine: accounts and balances, order checks, fills at the replayed price, resting orders.

Money and quantities are Decimal throughout. MARKET and marketable LIMIT orders fill at the replayed last
price; resting LIMIT orders fill at their limit when the price path reaches it; STOP_LOSS_LIMIT and
TAKE_PROFIT_LIMIT orders trigger when the path crosses their stop and then fill at the stop price if their
limit allows it, else rest as limit orders. Fees are charged in the asset received.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from decimal import ROUND_DOWN, Decimal

from devstack.exchange import errors
from devstack.exchange.errors import ApiError
from devstack.exchange.symbols import SymbolSpec

EIGHT_PLACES = Decimal("0.00000001")
DEFAULT_FEE_RATE = Decimal("0.001")
CLIENT_ORDER_ID = re.compile(r"^[a-zA-Z0-9-_]{1,36}$")
OPEN_STATUSES = frozenset({"NEW", "PARTIALLY_FILLED"})
STOP_TYPES = frozenset({"STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"})


def fmt(value: Decimal) -> str:
    return f"{value:.8f}"


@dataclass
class Balance:
    free: Decimal = Decimal(0)
    locked: Decimal = Decimal(0)


@dataclass
class Account:
    api_key: str
    secret: str
    balances: dict[str, Balance] = field(default_factory=dict)
    update_time: int = 0

    def balance(self, asset: str) -> Balance:
        return self.balances.setdefault(asset, Balance())


@dataclass
class OrderList:
    order_list_id: int
    list_client_order_id: str
    symbol: str
    order_ids: list[int]
    transaction_time: int
    status: str = "EXECUTING"  # listStatusType
    order_status: str = "EXECUTING"  # listOrderStatus


@dataclass
class Order:
    """Engine state of one order (mutable: it changes as it fills)."""

    symbol: str
    order_id: int
    client_order_id: str
    side: str
    type: str
    time_in_force: str | None
    orig_qty: Decimal
    price: Decimal
    stop_price: Decimal
    orig_quote_qty: Decimal
    time: int
    api_key: str
    status: str = "NEW"
    executed_qty: Decimal = Decimal(0)
    cumulative_quote_qty: Decimal = Decimal(0)
    update_time: int = 0
    working_time: int = -1
    order_list_id: int = -1
    locked_asset: str = ""
    locked_amount: Decimal = Decimal(0)
    fills: list[dict[str, str | int]] = field(default_factory=list)

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def triggered(self) -> bool:
        return self.working_time >= 0

    def result(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "orderId": self.order_id,
            "orderListId": self.order_list_id,
            "clientOrderId": self.client_order_id,
            "transactTime": self.update_time or self.time,
            "price": fmt(self.price),
            "origQty": fmt(self.orig_qty),
            "executedQty": fmt(self.executed_qty),
            "origQuoteOrderQty": fmt(self.orig_quote_qty),
            "cummulativeQuoteQty": fmt(self.cumulative_quote_qty),
            "status": self.status,
            "timeInForce": self.time_in_force or "GTC",
            "type": self.type,
            "side": self.side,
            **({"stopPrice": fmt(self.stop_price)} if self.type in STOP_TYPES else {}),
            "workingTime": self.working_time,
            "selfTradePreventionMode": "NONE",
        }

    def response(self, response_type: str) -> dict[str, object]:
        """The POST /order reply in ACK, RESULT or FULL form."""
        if response_type == "ACK":
            return {
                "symbol": self.symbol,
                "orderId": self.order_id,
                "orderListId": self.order_list_id,
                "clientOrderId": self.client_order_id,
                "transactTime": self.time,
            }
        result = self.result()
        result["transactTime"] = self.time
        if response_type == "FULL":
            result["fills"] = list(self.fills)
        return result

    def query(self) -> dict[str, object]:
        """The GET /order and openOrders form."""
        result = self.result()
        del result["transactTime"]
        result.update(
            {
                "stopPrice": fmt(self.stop_price),
                "icebergQty": fmt(Decimal(0)),
                "time": self.time,
                "updateTime": self.update_time or self.time,
                "isWorking": self.triggered,
            }
        )
        return result


@dataclass(frozen=True)
class OrderRequest:
    """A new order's parameters, already parsed."""

    symbol: str
    side: str
    type: str
    quantity: Decimal | None = None
    quote_order_qty: Decimal | None = None
    price: Decimal | None = None
    stop_price: Decimal | None = None
    time_in_force: str | None = None
    client_order_id: str | None = None
    response_type: str | None = None


class MatchingEngine:
    """All accounts and orders of the simulated exchange."""

    def __init__(self, specs: dict[str, SymbolSpec], fee_rate: Decimal = DEFAULT_FEE_RATE) -> None:
        self.specs = specs
        self.fee_rate = fee_rate
        self.accounts: dict[str, Account] = {}
        self.orders: dict[str, dict[int, Order]] = {symbol: {} for symbol in specs}
        self.order_lists: dict[int, OrderList] = {}
        self._next_order_id: dict[str, int] = dict.fromkeys(specs, 1)
        self._next_list_id = 1
        self._next_trade_id = 1

    # Accounts ------------------------------------------------------------------------------------------
    def create_account(
        self, balances: dict[str, Decimal], api_key: str | None = None, secret: str | None = None
    ) -> Account:
        account = Account(api_key or secrets.token_hex(32), secret or secrets.token_hex(32))
        for asset, amount in balances.items():
            account.balance(asset).free = amount
        self.accounts[account.api_key] = account
        return account

    # Orders --------------------------------------------------------------------------------------------
    def spec(self, symbol: str) -> SymbolSpec:
        spec = self.specs.get(symbol)
        if spec is None:
            raise errors.INVALID_SYMBOL
        return spec

    def place(self, account: Account, request: OrderRequest, last_price: Decimal, now_ms: int) -> Order:
        """Check and accept a new order; fill it at once when it is marketable."""
        spec = self.spec(request.symbol)
        order = self._new_order(account, spec, request, last_price, now_ms)
        self._check_filters(spec, order, last_price)
        if order.type == "MARKET":
            self._fill(account, spec, order, last_price, now_ms, taker=True)
        elif order.type in {"LIMIT", "LIMIT_MAKER"}:
            crosses = order.price >= last_price if order.side == "BUY" else order.price <= last_price
            if crosses and order.type == "LIMIT_MAKER":
                raise errors.rejected("Order would immediately match and take.")
            self._lock(account, spec, order)
            order.working_time = now_ms
            if crosses:
                self._fill(account, spec, order, last_price, now_ms, taker=True)
        else:
            self._check_stop_direction(order, last_price)
            self._lock(account, spec, order)
        self._register(order)
        account.update_time = now_ms
        return order

    def _new_order(
        self, account: Account, spec: SymbolSpec, request: OrderRequest, last_price: Decimal, now_ms: int
    ) -> Order:
        if request.side not in {"BUY", "SELL"}:
            raise ApiError(-1117, "Invalid side.")
        order_type = request.type
        if order_type not in {"MARKET", "LIMIT", "LIMIT_MAKER", *STOP_TYPES}:
            raise ApiError(-1116, "Invalid orderType.")
        client_id = request.client_order_id or secrets.token_urlsafe(16).replace("_", "x")[:22]
        if not CLIENT_ORDER_ID.match(client_id):
            raise ApiError(-1100, "Illegal characters found in parameter 'newClientOrderId'; legal range "
                                  "is '^[a-zA-Z0-9-_]{1,36}$'.")  # fmt: skip
        if any(o.client_order_id == client_id and o.is_open and o.api_key == account.api_key
               for o in self.orders[spec.symbol].values()):  # fmt: skip
            raise errors.rejected("Duplicate order sent.")
        quantity, quote_qty = _quantities(spec, request, last_price)
        return Order(
            symbol=spec.symbol,
            order_id=self._next_order_id[spec.symbol],
            client_order_id=client_id,
            side=request.side,
            type=order_type,
            time_in_force=request.time_in_force if order_type != "MARKET" else "GTC",
            orig_qty=quantity,
            price=request.price or Decimal(0),
            stop_price=request.stop_price or Decimal(0),
            orig_quote_qty=quote_qty,
            time=now_ms,
            api_key=account.api_key,
        )

    def _register(self, order: Order) -> None:
        self.orders[order.symbol][order.order_id] = order
        self._next_order_id[order.symbol] = order.order_id + 1

    def _check_filters(self, spec: SymbolSpec, order: Order, last_price: Decimal) -> None:
        for value in (order.orig_qty, order.price, order.stop_price):
            if value.as_tuple().exponent < -8:  # type: ignore[operator]
                raise ApiError(-1111, "Parameter has too much precision.")
        prices = [] if order.type == "MARKET" else [order.price]
        prices += [order.stop_price] if order.type in STOP_TYPES else []
        for price in prices:
            if price < spec.min_price or price > spec.max_price or price % spec.tick_size:
                raise errors.filter_failure("PRICE_FILTER")
        quantity = order.orig_qty
        if quantity < spec.min_qty or quantity > spec.max_qty or (quantity - spec.min_qty) % spec.step_size:
            raise errors.filter_failure("LOT_SIZE")
        if order.type == "MARKET" and quantity > spec.market_max_qty:
            raise errors.filter_failure("MARKET_LOT_SIZE")
        notional = quantity * (last_price if order.type == "MARKET" else order.price)
        if notional < spec.min_notional or (order.type != "MARKET" and notional > spec.max_notional):
            raise errors.filter_failure("NOTIONAL")

    @staticmethod
    def _check_stop_direction(order: Order, last_price: Decimal) -> None:
        # Stops above the market: STOP_LOSS BUY and TAKE_PROFIT SELL; below: the other two.
        above = (order.type == "STOP_LOSS_LIMIT") == (order.side == "BUY")
        if (above and order.stop_price <= last_price) or (not above and order.stop_price >= last_price):
            raise errors.rejected("Order would trigger immediately.")

    def _lock(self, account: Account, spec: SymbolSpec, order: Order, amount: Decimal | None = None) -> None:
        if order.side == "BUY":
            asset, needed = spec.quote_asset, order.price * order.orig_qty
        else:
            asset, needed = spec.base_asset, order.orig_qty
        needed = needed if amount is None else amount
        balance = account.balance(asset)
        if balance.free < needed:
            raise errors.INSUFFICIENT_BALANCE
        balance.free -= needed
        balance.locked += needed
        order.locked_asset, order.locked_amount = asset, needed

    def _unlock(self, account: Account, order: Order) -> None:
        if order.locked_amount:
            balance = account.balance(order.locked_asset)
            balance.locked -= order.locked_amount
            balance.free += order.locked_amount
            order.locked_amount = Decimal(0)

    def _fill(
        self, account: Account, spec: SymbolSpec, order: Order, price: Decimal, now_ms: int, *, taker: bool
    ) -> None:
        quantity = order.orig_qty - order.executed_qty
        quote = (quantity * price).quantize(EIGHT_PLACES, ROUND_DOWN)
        base_balance, quote_balance = account.balance(spec.base_asset), account.balance(spec.quote_asset)
        if order.side == "BUY":
            spend_locked = min(order.locked_amount, quote)
            if quote_balance.free + spend_locked < quote:
                raise errors.INSUFFICIENT_BALANCE
            quote_balance.locked -= spend_locked
            order.locked_amount -= spend_locked
            quote_balance.free -= quote - spend_locked
            commission = (quantity * self.fee_rate).quantize(EIGHT_PLACES, ROUND_DOWN)
            base_balance.free += quantity - commission
            commission_asset = spec.base_asset
        else:
            spend_locked = min(order.locked_amount, quantity)
            if base_balance.free + spend_locked < quantity:
                raise errors.INSUFFICIENT_BALANCE
            base_balance.locked -= spend_locked
            order.locked_amount -= spend_locked
            base_balance.free -= quantity - spend_locked
            commission = (quote * self.fee_rate).quantize(EIGHT_PLACES, ROUND_DOWN)
            quote_balance.free += quote - commission
            commission_asset = spec.quote_asset
        self._unlock(account, order)  # what a better-than-limit price left over
        order.executed_qty += quantity
        order.cumulative_quote_qty += quote
        order.status = "FILLED"
        order.update_time = now_ms
        if order.working_time < 0:
            order.working_time = now_ms
        order.fills.append(
            {
                "price": fmt(price),
                "qty": fmt(quantity),
                "commission": fmt(commission),
                "commissionAsset": commission_asset,
                "tradeId": self._next_trade_id,
            }
        )
        self._next_trade_id += 1
        account.update_time = now_ms
        if order.order_list_id >= 0:
            self._finish_list(order, now_ms)

    # Queries and cancels -------------------------------------------------------------------------------
    def find(self, account: Account, symbol: str, order_id: int | None, client_order_id: str | None) -> Order:
        self.spec(symbol)
        if order_id is None and client_order_id is None:
            raise errors.mandatory("orderId")
        candidates = [
            o
            for o in self.orders[symbol].values()
            if o.api_key == account.api_key
            and (order_id is None or o.order_id == order_id)
            and (client_order_id is None or o.client_order_id == client_order_id)
        ]
        if not candidates:
            raise errors.NO_SUCH_ORDER
        return max(candidates, key=lambda o: o.order_id)  # the newest with a reused client id

    def cancel(
        self, account: Account, symbol: str, order_id: int | None, client_order_id: str | None, now_ms: int
    ) -> Order:
        try:
            order = self.find(account, symbol, order_id, client_order_id)
        except ApiError as error:
            if error.code == errors.NO_SUCH_ORDER.code:
                raise errors.UNKNOWN_ORDER from error
            raise
        if not order.is_open:
            raise errors.UNKNOWN_ORDER
        if order.order_list_id >= 0:
            for leg in self._legs(order.order_list_id):
                self._close(account, leg, "CANCELED", now_ms)
            self._finish_list(order, now_ms, status="ALL_DONE")
        else:
            self._close(account, order, "CANCELED", now_ms)
        return order

    def _close(self, account: Account, order: Order, status: str, now_ms: int) -> None:
        if order.is_open:
            self._unlock(account, order)
            order.status = status
            order.update_time = now_ms

    def open_orders(self, account: Account, symbol: str | None) -> list[Order]:
        symbols = [symbol] if symbol else list(self.orders)
        return [
            order
            for name in symbols
            for order in self.orders[name].values()
            if order.api_key == account.api_key and order.is_open
        ]

    # OCO ------------------------------------------------------------------------------------------------
    def place_oco(
        self,
        account: Account,
        above: OrderRequest,
        below: OrderRequest,
        *,
        list_client_order_id: str | None,
        last_price: Decimal,
        now_ms: int,
    ) -> tuple[OrderList, list[Order]]:
        """Place an OCO pair sharing one locked quantity; the first leg to fill cancels the other."""
        spec = self.spec(above.symbol)
        legs = []
        for request in (below, above):
            order = self._new_order(account, spec, request, last_price, now_ms)
            self._check_filters(spec, order, last_price)
            if order.type in STOP_TYPES:
                self._check_stop_direction(order, last_price)
            else:
                crosses = order.price >= last_price if order.side == "BUY" else order.price <= last_price
                if crosses:
                    raise errors.rejected("Order would immediately match and take.")
                order.working_time = now_ms
            legs.append(order)
        if legs[0].side != legs[1].side or legs[0].orig_qty != legs[1].orig_qty:
            raise ApiError(-1104, "Not all sent parameters were read.")
        # One lock for both legs: the larger of the two BUY prices, or the SELL quantity.
        amount = max(leg.price * leg.orig_qty for leg in legs) if legs[0].side == "BUY" else legs[0].orig_qty
        self._lock(account, spec, legs[0], amount)
        legs[1].order_id = legs[0].order_id + 1
        order_list = OrderList(
            self._next_list_id,
            list_client_order_id or secrets.token_hex(11),
            spec.symbol,
            [leg.order_id for leg in legs],
            now_ms,
        )
        self._next_list_id += 1
        for leg in legs:
            leg.order_list_id = order_list.order_list_id
            self._register(leg)
        self.order_lists[order_list.order_list_id] = order_list
        return order_list, legs

    def _legs(self, order_list_id: int) -> list[Order]:
        order_list = self.order_lists[order_list_id]
        return [self.orders[order_list.symbol][order_id] for order_id in order_list.order_ids]

    def _finish_list(self, order: Order, now_ms: int, status: str = "ALL_DONE") -> None:
        order_list = self.order_lists[order.order_list_id]
        legs = self._legs(order_list.order_list_id)
        holder = next((leg for leg in legs if leg.locked_amount), None)
        for leg in legs:
            if leg is not order and leg.is_open:
                account = self.accounts[leg.api_key]
                if holder is not None and holder is not order:
                    self._unlock(account, holder)
                leg.status = "EXPIRED" if order.status == "FILLED" else "CANCELED"
                leg.update_time = now_ms
        order_list.status, order_list.order_status = status, "ALL_DONE"

    # The price path ------------------------------------------------------------------------------------
    def on_price_path(self, symbol: str, low: Decimal, high: Decimal, now_ms: int) -> list[Order]:
        """Trigger and fill resting orders the path [low, high] reached; return those that changed."""
        changed = []
        for order in list(self.orders.get(symbol, {}).values()):
            if not order.is_open:
                continue
            account = self.accounts[order.api_key]
            spec = self.specs[symbol]
            if order.type in STOP_TYPES and not order.triggered:
                if not low <= order.stop_price <= high:
                    continue
                order.working_time = now_ms
                limit_ok = (
                    order.price >= order.stop_price
                    if order.side == "BUY"
                    else order.price <= order.stop_price
                )
                if limit_ok:
                    self._move_lock_to(account, order)
                    self._fill(account, spec, order, order.stop_price, now_ms, taker=True)
                changed.append(order)
                continue
            if order.type in {"LIMIT", "LIMIT_MAKER"} or order.triggered:
                reached = low <= order.price if order.side == "BUY" else high >= order.price
                if reached:
                    self._move_lock_to(account, order)
                    self._fill(account, spec, order, order.price, now_ms, taker=False)
                    changed.append(order)
        return changed

    def _move_lock_to(self, account: Account, order: Order) -> None:
        """An OCO leg that fills takes over the list's lock from its sibling."""
        if order.order_list_id < 0 or order.locked_amount:
            return
        for leg in self._legs(order.order_list_id):
            if leg is not order and leg.locked_amount:
                order.locked_asset, order.locked_amount = leg.locked_asset, leg.locked_amount
                leg.locked_amount = Decimal(0)


def _quantities(spec: SymbolSpec, request: OrderRequest, last_price: Decimal) -> tuple[Decimal, Decimal]:
    """(quantity, quoteOrderQty) after checking the parameters each order type requires."""
    quantity = request.quantity
    if request.type == "MARKET":
        if (quantity is None) == (request.quote_order_qty is None):
            raise errors.mandatory("quantity")
        if request.quote_order_qty is None:
            assert quantity is not None
            return quantity, Decimal(0)
        if request.quote_order_qty <= 0:
            raise errors.mandatory("quoteOrderQty")
        return _floor_step(request.quote_order_qty / last_price, spec.step_size), request.quote_order_qty
    for name, value in (("quantity", quantity), ("price", request.price)):
        if value is None:
            raise errors.mandatory(name)
    if request.type != "LIMIT_MAKER" and request.time_in_force is None:
        raise errors.mandatory("timeInForce")
    if request.type in STOP_TYPES and request.stop_price is None:
        raise errors.mandatory("stopPrice")
    assert quantity is not None
    return quantity, Decimal(0)


def _floor_step(value: Decimal, step: Decimal) -> Decimal:
    return (value / step).to_integral_value(ROUND_DOWN) * step
