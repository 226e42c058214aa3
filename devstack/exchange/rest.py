"""Binance Spot REST under `/api/v3`: parameters, HMAC signatures, weights, and the endpoint handlers."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from aiohttp import web

from devstack.exchange import errors
from devstack.exchange.engine import Account, OrderRequest, fmt
from devstack.exchange.errors import ApiError
from worker.domain.intervals import INTERVAL_MS
from worker.market.recordings import format_price

if TYPE_CHECKING:
    from devstack.exchange.server import ExchangeSimulator

MAX_RECV_WINDOW_MS = 60_000
DEFAULT_RECV_WINDOW_MS = 5_000
_SIGNATURE_PARAM = re.compile(r"(^|&)signature=[^&]*")
_DECIMAL = re.compile(r"^\d{1,20}(\.\d{1,20})?$")
_INTEGER = re.compile(r"^-?\d{1,20}$")

Handler = Callable[["Call"], Awaitable[object]]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    weight: int
    signed: bool
    handler_name: str


ENDPOINTS = [
    Endpoint("GET", "ping", 1, False, "ping"),
    Endpoint("GET", "time", 1, False, "server_time"),
    Endpoint("GET", "exchangeInfo", 20, False, "exchange_info"),
    Endpoint("GET", "klines", 2, False, "klines"),
    Endpoint("GET", "ticker/24hr", 2, False, "ticker_24hr"),
    Endpoint("GET", "ticker/price", 2, False, "ticker_price"),
    Endpoint("POST", "order", 1, True, "new_order"),
    Endpoint("POST", "order/test", 1, True, "test_order"),
    Endpoint("GET", "order", 4, True, "get_order"),
    Endpoint("DELETE", "order", 1, True, "cancel_order"),
    Endpoint("GET", "openOrders", 6, True, "open_orders"),
    Endpoint("GET", "account", 20, True, "account"),
    Endpoint("POST", "orderList/oco", 1, True, "new_oco"),
]


@dataclass
class Call:
    """One parsed request: parameters (query wins over body, as on Binance) and the caller's account."""

    params: dict[str, str]
    account: Account | None
    now_ms: int

    def text(self, name: str, *, required: bool = True) -> str | None:
        value = self.params.get(name)
        if value in (None, ""):
            if required:
                raise errors.mandatory(name)
            return None
        return value

    def required_text(self, name: str) -> str:
        value = self.text(name)
        assert value is not None
        return value

    def decimal(self, name: str, *, required: bool = False) -> Decimal | None:
        value = self.text(name, required=required)
        if value is None:
            return None
        if not _DECIMAL.match(value):
            raise ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                                  f"'^([0-9]{{1,20}})(\\.[0-9]{{1,20}})?$'.")  # fmt: skip
        try:
            return Decimal(value)
        except InvalidOperation as error:
            raise errors.illegal(name) from error

    def integer(self, name: str, *, required: bool = False) -> int | None:
        value = self.text(name, required=required)
        if value is None:
            return None
        if not _INTEGER.match(value):
            raise errors.illegal(name)
        return int(value)

    def symbol(self, simulator: ExchangeSimulator) -> str:
        symbol = self.required_text("symbol")
        if symbol not in simulator.engine.specs:
            raise errors.INVALID_SYMBOL
        return symbol

    @property
    def user(self) -> Account:
        assert self.account is not None
        return self.account


def verify_signature(secret: str, raw_query: str, raw_body: str, signature: str) -> bool:
    """HMAC-SHA256 over query string + body (without the signature parameter), hex, case-insensitive."""
    payload = _SIGNATURE_PARAM.sub("", raw_query).lstrip("&") + _SIGNATURE_PARAM.sub("", raw_body).lstrip("&")
    expected = hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature.lower())


class RestApi:
    """The `/api/v3` handlers bound to one simulator."""

    def __init__(self, simulator: ExchangeSimulator) -> None:
        self.simulator = simulator

    def routes(self) -> list[web.RouteDef]:
        return [
            web.route(endpoint.method, f"/api/v3/{endpoint.path}", self._wrap(endpoint))
            for endpoint in ENDPOINTS
        ]

    def _wrap(self, endpoint: Endpoint) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        handler: Handler = getattr(self, endpoint.handler_name)

        async def handle(request: web.Request) -> web.StreamResponse:
            simulator = self.simulator
            limiter = simulator.limiter
            ip = request.remote or "?"
            headers: dict[str, str] = {}
            try:
                if simulator.faults.delay_secs:
                    await simulator.sleep(simulator.faults.delay_secs)
                status = simulator.faults.take_rejection()
                if status is not None or limiter.banned(ip):
                    raise limiter.reject(ip, status or 418)
                if not limiter.spend(ip, endpoint.weight):
                    raise limiter.reject(ip, 429)
                headers["X-MBX-USED-WEIGHT-1M"] = str(limiter.used(ip))
                call = await self._parse(request, endpoint)
                body = await handler(call)
                if endpoint.path.startswith("order") and endpoint.method == "POST":
                    headers["X-MBX-ORDER-COUNT-10S"] = "1"
                    headers["X-MBX-ORDER-COUNT-1D"] = "1"
                return web.json_response(body, headers=headers, dumps=_dumps)
            except ApiError as error:
                headers["X-MBX-USED-WEIGHT-1M"] = str(limiter.used(ip))
                if error.http_status in (418, 429):
                    headers["Retry-After"] = str(simulator.faults.retry_after_secs)
                return web.json_response(
                    {"code": error.code, "msg": error.msg}, status=error.http_status, headers=headers
                )

        return handle

    async def _parse(self, request: web.Request, endpoint: Endpoint) -> Call:
        raw_query = request.rel_url.raw_query_string
        raw_body = await request.text() if request.can_read_body else ""
        params: dict[str, str] = {}
        if raw_body:
            params.update((await request.post()).items())  # type: ignore[arg-type]
        params.update(request.query.items())
        simulator = self.simulator
        market_ms = simulator.clock.now_ms()
        account = None
        if endpoint.signed:
            account = self._authenticate(request, params, raw_query, raw_body, market_ms)
        return Call(params, account, market_ms)

    def _authenticate(
        self, request: web.Request, params: dict[str, str], raw_query: str, raw_body: str, market_ms: int
    ) -> Account:
        api_key = request.headers.get("X-MBX-APIKEY")
        if not api_key:
            raise ApiError(-2014, "API-key format invalid.", 401)
        account = self.simulator.engine.accounts.get(api_key)
        if account is None:
            raise ApiError(-2015, "Invalid API-key, IP, or permissions for action.", 401)
        call = Call(params, account, market_ms)
        timestamp = call.integer("timestamp", required=True)
        recv_window = call.decimal("recvWindow") or Decimal(DEFAULT_RECV_WINDOW_MS)
        if recv_window > MAX_RECV_WINDOW_MS:
            raise ApiError(-1131, f"recvWindow must be less than {MAX_RECV_WINDOW_MS}.")
        assert timestamp is not None
        if timestamp > 10**14:  # microseconds
            timestamp //= 1000
        # python-binance's AsyncClient stamps requests on the server's (replayed) clock, its sync Client
        # on the wall clock (it never syncs): a request is on time if it is on time for either.
        wall_ms = int(time.time() * 1000)
        if not any(timestamp < now + 1000 and now - timestamp <= recv_window for now in (market_ms, wall_ms)):
            raise ApiError(-1021, "Timestamp for this request is outside of the recvWindow.")
        signature = call.required_text("signature")
        if not verify_signature(account.secret, raw_query, raw_body, signature):
            raise ApiError(-1022, "Signature for this request is not valid.")
        return account

    # Market data --------------------------------------------------------------------------------------
    async def ping(self, call: Call) -> object:
        return {}

    async def server_time(self, call: Call) -> object:
        return {"serverTime": call.now_ms}

    async def exchange_info(self, call: Call) -> object:
        specs = self.simulator.engine.specs
        wanted = list(specs)
        if symbol := call.text("symbol", required=False):
            wanted = [symbol]
        elif symbols := call.text("symbols", required=False):
            wanted = _symbol_list(symbols)
        if any(name not in specs for name in wanted):
            raise errors.INVALID_SYMBOL
        return {
            "timezone": "UTC",
            "serverTime": call.now_ms,
            "rateLimits": [
                {
                    "rateLimitType": "REQUEST_WEIGHT",
                    "interval": "MINUTE",
                    "intervalNum": 1,
                    "limit": self.simulator.config.weight_limit_1m,
                },
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5, "limit": 300000},
            ],
            "exchangeFilters": [],
            "symbols": [specs[name].exchange_info() for name in wanted],
        }

    async def klines(self, call: Call) -> object:
        symbol = call.symbol(self.simulator)
        interval = call.required_text("interval")
        if interval not in INTERVAL_MS:
            raise ApiError(-1120, "Invalid interval.")
        limit = call.integer("limit") or 500
        if limit < 1:
            raise ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        market = self.simulator.markets[symbol]
        rows = market.klines(
            INTERVAL_MS[interval],
            call.now_ms,
            start_ms=call.integer("startTime"),
            end_ms=call.integer("endTime"),
            limit=min(limit, 1000),
        )
        return [row.rest_row() for row in rows]

    def _symbols(self, call: Call) -> tuple[list[str], bool]:
        markets = self.simulator.markets
        if symbol := call.text("symbol", required=False):
            if symbol not in markets:
                raise errors.INVALID_SYMBOL
            return [symbol], True
        if symbols := call.text("symbols", required=False):
            names = _symbol_list(symbols)
            if any(name not in markets for name in names):
                raise errors.INVALID_SYMBOL
            return names, False
        return sorted(markets), False

    async def ticker_24hr(self, call: Call) -> object:
        names, single = self._symbols(call)
        tickers = [self.simulator.markets[name].ticker(call.now_ms) for name in names]
        found = [ticker for ticker in tickers if ticker is not None]
        return found[0] if single and found else found

    async def ticker_price(self, call: Call) -> object:
        names, single = self._symbols(call)
        prices = []
        for name in names:
            price = self.simulator.markets[name].price_at(call.now_ms)
            if price is not None:
                prices.append({"symbol": name, "price": format_price(price)})
        return prices[0] if single and prices else prices

    # Trading ---------------------------------------------------------------------------------------
    def _order_request(self, call: Call, prefix: str = "") -> OrderRequest:
        def key(name: str) -> str:
            return prefix + name[0].upper() + name[1:] if prefix else name

        return OrderRequest(
            symbol=call.symbol(self.simulator),
            side=call.required_text("side"),
            type=call.required_text(key("type")),
            quantity=call.decimal("quantity"),
            quote_order_qty=call.decimal("quoteOrderQty") if not prefix else None,
            price=call.decimal(key("price")),
            stop_price=call.decimal(key("stopPrice")),
            time_in_force=call.text(key("timeInForce"), required=False),
            client_order_id=call.text(key("clientOrderId") if prefix else "newClientOrderId", required=False),
            response_type=call.text("newOrderRespType", required=False),
        )

    async def new_order(self, call: Call) -> object:
        request = self._order_request(call)
        simulator = self.simulator
        last_price = simulator.last_price(request.symbol, call.now_ms)
        order = simulator.engine.place(call.user, request, last_price, call.now_ms)
        default = "FULL" if request.type in ("MARKET", "LIMIT") else "ACK"
        return order.response(request.response_type or default)

    async def test_order(self, call: Call) -> object:
        request = self._order_request(call)
        self.simulator.engine.spec(request.symbol)
        return {}

    async def get_order(self, call: Call) -> object:
        symbol = call.symbol(self.simulator)
        self.simulator.catch_up(call.now_ms)
        order = self.simulator.engine.find(
            call.user, symbol, call.integer("orderId"), call.text("origClientOrderId", required=False)
        )
        return order.query()

    async def cancel_order(self, call: Call) -> object:
        symbol = call.symbol(self.simulator)
        self.simulator.catch_up(call.now_ms)
        order = self.simulator.engine.cancel(
            call.user,
            symbol,
            call.integer("orderId"),
            call.text("origClientOrderId", required=False),
            call.now_ms,
        )
        result = order.result()
        result["origClientOrderId"] = order.client_order_id
        result["clientOrderId"] = call.text("newClientOrderId", required=False) or order.client_order_id
        return result

    async def open_orders(self, call: Call) -> object:
        symbol = call.symbol(self.simulator) if call.text("symbol", required=False) else None
        self.simulator.catch_up(call.now_ms)
        return [order.query() for order in self.simulator.engine.open_orders(call.user, symbol)]

    async def account(self, call: Call) -> object:
        self.simulator.catch_up(call.now_ms)
        account = call.user
        omit_zero = call.text("omitZeroBalances", required=False) == "true"
        balances = [
            {"asset": asset, "free": fmt(balance.free), "locked": fmt(balance.locked)}
            for asset, balance in sorted(account.balances.items())
            if not (omit_zero and balance.free == 0 and balance.locked == 0)
        ]
        fee_bps = int(self.simulator.engine.fee_rate * 10_000)
        rate = fmt(self.simulator.engine.fee_rate)
        return {
            "makerCommission": fee_bps,
            "takerCommission": fee_bps,
            "buyerCommission": 0,
            "sellerCommission": 0,
            "commissionRates": {
                "maker": rate,
                "taker": rate,
                "buyer": fmt(Decimal(0)),
                "seller": fmt(Decimal(0)),
            },
            "canTrade": True,
            "canWithdraw": True,
            "canDeposit": True,
            "brokered": False,
            "requireSelfTradePrevention": False,
            "preventSor": False,
            "updateTime": account.update_time,
            "accountType": "SPOT",
            "balances": balances,
            "permissions": ["SPOT"],
            "uid": abs(hash(account.api_key)) % 10**9,
        }

    async def new_oco(self, call: Call) -> object:
        above = self._order_request(call, prefix="above")
        below = self._order_request(call, prefix="below")
        simulator = self.simulator
        last_price = simulator.last_price(above.symbol, call.now_ms)
        order_list, legs = simulator.engine.place_oco(
            call.user,
            above,
            below,
            list_client_order_id=call.text("listClientOrderId", required=False),
            last_price=last_price,
            now_ms=call.now_ms,
        )
        return {
            "orderListId": order_list.order_list_id,
            "contingencyType": "OCO",
            "listStatusType": order_list.status,
            "listOrderStatus": order_list.order_status,
            "listClientOrderId": order_list.list_client_order_id,
            "transactionTime": order_list.transaction_time,
            "symbol": order_list.symbol,
            "orders": [
                {"symbol": leg.symbol, "orderId": leg.order_id, "clientOrderId": leg.client_order_id}
                for leg in legs
            ],
            "orderReports": [leg.response("RESULT") for leg in legs],
        }


def _symbol_list(text: str) -> list[str]:
    try:
        names = json.loads(text)
    except ValueError as error:
        raise ApiError(-1100, "Illegal characters found in parameter 'symbols'.") from error
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ApiError(-1100, "Illegal characters found in parameter 'symbols'.")
    return names


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))
