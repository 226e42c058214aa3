"""Real trading on Binance Spot through python-binance's AsyncClient, pointed at a configurable base URL.

Every order carries our client order id. When the outcome of a request is unknown (a timeout, a 5xx, -1007)
the order is looked up by that id, twice and a moment apart, before it is ever sent again; a retry therefore
never buys twice. Binance's errors become the worker's: 4xx -> OrderRejected (with the exchange's message),
429/418 -> RateLimited, everything else -> TransientError.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, TypeVar

import aiohttp

from worker.clock import Clock, LiveClock
from worker.domain.enums import OrderSide, OrderType, PositionSide, TradingMode
from worker.domain.money import ONE, ZERO, SymbolRules, exact, plain
from worker.domain.orders import ClientOrderId, ExchangeOrderId, Fill, OrderReport, OrderState
from worker.domain.positions import Protection, ProtectionRequest
from worker.errors import ConfigError, OrderRejected, RateLimited, TransientError
from worker.market.binance_api import AsyncClient, BinanceAPIException, BinanceRequestException
from worker.market.reachability import Reachability

logger = logging.getLogger(__name__)

T = TypeVar("T")

NO_SUCH_ORDER = -2013
UNKNOWN_ORDER = -2011
EXECUTION_UNKNOWN = -1007
DEFAULT_FEE_RATE = Decimal("0.001")


class OutcomeUnknown(TransientError):
    """The exchange may or may not have executed the request; look the order up before anything else."""


class BinanceVenue:
    """The Binance Spot account given by `api_key` at `base_url` (production, testnet or the simulator)."""

    mode = TradingMode.REAL
    supports_protection = True

    def __init__(
        self,
        base_url: str,
        api_key: str,
        api_secret: str,
        *,
        request_timeout_secs: float = 10.0,
        settle_secs: float = 0.5,
        send_attempts: int = 3,
        stop_limit_buffer: Decimal = Decimal("0.005"),
        clock: Clock | None = None,
        reachability: Reachability | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._reachability = reachability or Reachability()
        self._api_key = api_key
        self._api_secret = api_secret
        self._timeout_secs = request_timeout_secs
        self._settle_secs = settle_secs
        self._send_attempts = send_attempts
        self._stop_limit_buffer = stop_limit_buffer
        self._clock = clock or LiveClock()
        self._client: Any = None
        self._rules: dict[str, SymbolRules] = {}
        self.taker_fee_rate = DEFAULT_FEE_RATE

    # Lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._client is None:
            # Constructed directly (AsyncClient.create would ping the production host first).
            client = AsyncClient(
                self._api_key, self._api_secret, requests_params={"timeout": self._timeout_secs}
            )
            client.API_URL = f"{self._base_url}/api"
            self._client = client
        info = await self._call(self._client.get_exchange_info, "exchangeInfo")
        self._rules = {s["symbol"]: SymbolRules.from_exchange_info(s) for s in info.get("symbols", [])}
        try:
            account = await self._call(self._client.get_account, "account")
        except ExchangeRejected as error:
            if error.code in KEY_REJECTED_CODES:
                # Retrying or restarting will not make the key valid: the user must fix it.
                raise ConfigError(
                    f"Binance refused the API key ({error.code}: {error.exchange_message})"
                ) from error
            raise
        rates = account.get("commissionRates") or {}
        if rates.get("taker") is not None:
            self.taker_fee_rate = Decimal(str(rates["taker"]))

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.close_connection()
            self._client = None

    async def rules(self, symbol: str) -> SymbolRules:
        rules = self._rules.get(symbol)
        if rules is None:
            raise OrderRejected(f"symbol={symbol} is not traded on this exchange")
        return rules

    async def balances(self) -> dict[str, tuple[Decimal, Decimal]]:
        """Asset -> (free, locked)."""
        account = await self._call(self._client.get_account, "account")
        return {
            b["asset"]: (Decimal(str(b["free"])), Decimal(str(b["locked"])))
            for b in account.get("balances", [])
        }

    # Orders -------------------------------------------------------------------------------------------
    async def market_order(
        self,
        client_order_id: ClientOrderId,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        reference_price: Decimal,
    ) -> OrderReport:
        params = {
            "symbol": symbol,
            "side": side.value,
            "type": "MARKET",
            "quantity": plain(quantity),
            "newClientOrderId": client_order_id,
            "newOrderRespType": "FULL",
        }
        report: OrderReport = await self._send_once(
            symbol, client_order_id, lambda: self._client.create_order(**params)
        )
        return report

    async def place_protection(self, request: ProtectionRequest) -> Protection:
        rules = await self.rules(request.symbol)
        long = request.side is PositionSide.LONG
        exit_side = "SELL" if long else "BUY"
        quantity = plain(request.quantity)
        stop = request.stop_loss
        target = request.take_profit
        stop_limit = None
        if stop is not None:
            stop = rules.price(stop)
            with exact():
                # The limit sits past the stop so the order still fills when the price gaps through it.
                buffered = stop * (ONE - self._stop_limit_buffer if long else ONE + self._stop_limit_buffer)
            stop_limit = rules.price(buffered, up=not long)
        if target is not None:
            target = rules.price(target)
        if stop is not None and target is not None:
            assert stop_limit is not None
            stop_leg = {"Type": "STOP_LOSS_LIMIT", "Price": plain(stop_limit), "StopPrice": plain(stop),
                        "TimeInForce": "GTC", "ClientOrderId": request.stop_loss_id}  # fmt: skip
            target_leg = {
                "Type": "LIMIT_MAKER",
                "Price": plain(target),
                "ClientOrderId": request.take_profit_id,
            }
            above, below = (target_leg, stop_leg) if long else (stop_leg, target_leg)
            params: dict[str, Any] = {"symbol": request.symbol, "side": exit_side, "quantity": quantity,
                                      "listClientOrderId": f"{request.stop_loss_id}L"[:36]}  # fmt: skip
            params |= {f"above{key}": value for key, value in above.items()}
            params |= {f"below{key}": value for key, value in below.items()}
            result = await self._send_once(
                request.symbol,
                request.stop_loss_id,
                lambda: self._client.create_oco_order(**params),
                parse=lambda body: body,
            )
            if isinstance(result, OrderReport):  # found by lookup after an unknown outcome
                target_report = await self.lookup(request.symbol, request.take_profit_id)
                stop_order_id = result.exchange_order_id
                target_order_id = target_report.exchange_order_id if target_report is not None else None
            else:
                legs = {
                    o["clientOrderId"]: ExchangeOrderId(int(o["orderId"])) for o in result.get("orders", [])
                }
                stop_order_id = legs.get(request.stop_loss_id)
                target_order_id = legs.get(request.take_profit_id)
            return Protection(
                request.stop_loss_id,
                request.take_profit_id,
                stop_order_id,
                target_order_id,
                request.generation,
            )
        if stop is not None:
            assert stop_limit is not None
            report = await self._send_once(
                request.symbol,
                request.stop_loss_id,
                lambda: self._client.create_order(
                    symbol=request.symbol,
                    side=exit_side,
                    type="STOP_LOSS_LIMIT",
                    timeInForce="GTC",
                    quantity=quantity,
                    price=plain(stop_limit),
                    stopPrice=plain(stop),
                    newClientOrderId=request.stop_loss_id,
                ),
            )
            return Protection(request.stop_loss_id, None, report.exchange_order_id, None, request.generation)
        if target is not None:
            report = await self._send_once(
                request.symbol,
                request.take_profit_id,
                lambda: self._client.create_order(
                    symbol=request.symbol,
                    side=exit_side,
                    type="TAKE_PROFIT_LIMIT",
                    timeInForce="GTC",
                    quantity=quantity,
                    price=plain(target),
                    stopPrice=plain(target),
                    newClientOrderId=request.take_profit_id,
                ),
            )
            return Protection(
                None, request.take_profit_id, None, report.exchange_order_id, request.generation
            )
        return Protection(generation=request.generation)

    async def lookup(self, symbol: str, client_order_id: ClientOrderId) -> OrderReport | None:
        try:
            body = await self._call(
                lambda: self._client.get_order(symbol=symbol, origClientOrderId=client_order_id),
                f"get order client_order_id={client_order_id}",
            )
        except OrderRejected as error:
            if getattr(error, "code", None) == NO_SUCH_ORDER:
                return None
            raise
        return self._report(body)

    async def cancel(self, symbol: str, client_order_id: ClientOrderId) -> OrderReport | None:
        try:
            body = await self._call(
                lambda: self._client.cancel_order(symbol=symbol, origClientOrderId=client_order_id),
                f"cancel client_order_id={client_order_id}",
            )
        except OrderRejected as error:
            if getattr(error, "code", None) in (UNKNOWN_ORDER, NO_SUCH_ORDER):
                # Already done (filled, expired with its OCO sibling, cancelled) or never placed.
                return await self.lookup(symbol, client_order_id)
            raise
        except OutcomeUnknown:
            return await self.lookup(symbol, client_order_id)
        return self._report(body)

    async def open_orders(self, symbol: str | None = None) -> list[OrderReport]:
        params = {"symbol": symbol} if symbol else {}
        body = await self._call(lambda: self._client.get_open_orders(**params), "open orders")
        return [self._report(order) for order in body]

    # Plumbing -----------------------------------------------------------------------------------------
    async def _send_once(
        self,
        symbol: str,
        client_order_id: ClientOrderId,
        send: Callable[[], Awaitable[dict[str, Any]]],
        parse: Callable[[dict[str, Any]], T] | None = None,
    ) -> Any:
        """Send a new order; on an unknown outcome look it up (twice, a moment apart) before resending it."""
        what = f"order client_order_id={client_order_id} symbol={symbol}"
        for attempt in range(self._send_attempts):
            try:
                body = await self._call(send, what)
                return parse(body) if parse is not None else self._report(body)
            except OutcomeUnknown as error:
                logger.warning(
                    "order outcome unknown, looking it up %s attempt=%d error=%s", what, attempt + 1, error
                )
            for _ in range(2):
                await self._clock.sleep(self._settle_secs)
                try:
                    found = await self.lookup(symbol, client_order_id)
                except TransientError as error:
                    logger.warning("order lookup failed %s error=%s", what, error)
                    continue
                if found is not None:
                    logger.info("order found after an unknown outcome %s state=%s", what, found.state)
                    return found
            # Seen as absent twice: the exchange never accepted it, so sending it again is safe.
        raise OutcomeUnknown(f"{what}: no answer after {self._send_attempts} attempts")

    async def _call(self, request: Callable[[], Awaitable[Any]], what: str) -> Any:
        if self._client is None:
            raise TransientError(f"{what}: the Binance venue is not started")
        try:
            result = await request()
        except BinanceAPIException as error:
            status = int(error.status_code)
            self._reachability.record_status(status, what)
            message = f"{what}: HTTP {status} code={error.code} {error.message}"
            if status in (418, 429):
                retry_after = (
                    error.response.headers.get("Retry-After") if error.response is not None else None
                )
                raise RateLimited(message, float(retry_after) if retry_after else None) from error
            if status >= 500 or error.code == EXECUTION_UNKNOWN:
                raise OutcomeUnknown(message) from error
            raise ExchangeRejected(message, int(error.code), str(error.message)) from error
        except (TimeoutError, aiohttp.ClientError, BinanceRequestException, OSError) as error:
            self._reachability.unreachable(f"REST {what}: {type(error).__name__}: {error}")
            raise OutcomeUnknown(f"{what}: {type(error).__name__}: {error}") from error
        self._reachability.answered()
        return result

    def _report(self, body: dict[str, Any]) -> OrderReport:
        executed = Decimal(str(body.get("executedQty", "0")))
        quote = Decimal(str(body.get("cummulativeQuoteQty", "0")))
        side = OrderSide(body["side"])
        fill = None
        if executed > 0:
            with exact():
                price = quote / executed
            fill = self._fill(side, executed, price, body.get("fills"))
        order_type = body.get("type", "MARKET")
        return OrderReport(
            client_order_id=ClientOrderId(str(body["clientOrderId"])),
            symbol=str(body["symbol"]),
            side=side,
            order_type=OrderType(order_type) if order_type in OrderType.__members__ else OrderType.LIMIT,
            state=OrderState(body.get("status", "NEW")),
            exchange_order_id=ExchangeOrderId(int(body["orderId"])) if "orderId" in body else None,
            fill=fill,
            stop_price=Decimal(str(body["stopPrice"])) if body.get("stopPrice") else None,
        )

    def _fill(self, side: OrderSide, executed: Decimal, price: Decimal, fills: Any) -> Fill:
        base_asset_fee = ZERO
        with exact():
            if isinstance(fills, list) and fills:
                fee = sum((Decimal(str(f["commission"])) for f in fills), ZERO)
                asset = str(fills[0]["commissionAsset"])
                # A BUY's commission is taken from the base asset it bought, a SELL's from the quote.
                in_base = side is OrderSide.BUY
            else:
                # GET /order has no fills: the fee is the account's taker rate, charged as Binance does.
                in_base = side is OrderSide.BUY
                fee = executed * self.taker_fee_rate if in_base else executed * price * self.taker_fee_rate
                fee = fee.quantize(Decimal("0.00000001"), rounding="ROUND_DOWN")
                asset = "BASE" if in_base else "QUOTE"
            if in_base:
                base_asset_fee = fee
                fee_quote = fee * price
            else:
                fee_quote = fee
        return Fill(executed, price, fee_quote, fee, asset, base_asset_fee)


# Binance's answers to a key that is wrong, lacks permissions, or signs badly.
KEY_REJECTED_CODES = frozenset({-2015, -2014, -2008, -1022})


class ExchangeRejected(OrderRejected):
    """The exchange refused a request; `code` and `exchange_message` are Binance's."""

    def __init__(self, message: str, code: int, exchange_message: str) -> None:
        super().__init__(message)
        self.code = code
        self.exchange_message = exchange_message
