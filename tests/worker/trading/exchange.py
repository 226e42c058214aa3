"""The devstack Binance simulator for trading tests, with two faults its own controls lack: an order the
exchange accepts but whose reply never arrives in time, and a refused OCO placement (HTTP middleware)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

from aiohttp import web

from devstack.exchange.engine import Account, Order
from devstack.exchange.server import ExchangeSimulator

# 2025-01-03 03:00 UTC: two days into the 1m recordings.
START_MS = 1_735_873_200_000


@dataclass
class TradingFaults:
    late_reply_secs: float = 0.0  # POST /order: accept and execute, then answer this late (once)
    refuse_oco: bool = False  # POST /orderList/oco: answer -2010 without placing anything


class FaultySimulator(ExchangeSimulator):
    """The simulator with HTTP-level faults for the executor's retry and protection paths."""

    trading_faults: TradingFaults

    def app(self) -> web.Application:
        self.trading_faults = TradingFaults()
        app = super().app()
        app.middlewares.append(self._faults_middleware)
        return app

    @web.middleware
    async def _faults_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        faults = self.trading_faults
        if request.method == "POST" and request.path == "/api/v3/orderList/oco" and faults.refuse_oco:
            return web.json_response({"code": -2010, "msg": "Order would trigger immediately."}, status=400)
        response = await handler(request)
        if request.method == "POST" and request.path == "/api/v3/order" and faults.late_reply_secs:
            delay, faults.late_reply_secs = faults.late_reply_secs, 0.0
            await asyncio.sleep(delay)
        return response

    def account(self, api_key: str) -> Account:
        return self.engine.accounts[api_key]

    def orders_with(self, client_order_id: str, symbol: str = "BTCUSDT") -> list[Order]:
        return [o for o in self.engine.orders[symbol].values() if o.client_order_id == client_order_id]

    def price(self, symbol: str = "BTCUSDT") -> Decimal:
        return self.last_price(symbol, self.clock.now_ms())
