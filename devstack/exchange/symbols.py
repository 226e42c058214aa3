"""Trading rules per symbol (exchangeInfo): assets, tick and step sizes, notional limits."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

QUOTE_ASSETS = ("USDT", "USDC", "FDUSD", "BTC", "ETH", "BNB")
ORDER_TYPES = ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"]


@dataclass(frozen=True, slots=True)
class SymbolSpec:
    """The filters of one symbol, with Binance's current values for BTCUSDT/ETHUSDT as defaults."""

    symbol: str
    base_asset: str
    quote_asset: str
    tick_size: Decimal = Decimal("0.01")
    min_price: Decimal = Decimal("0.01")
    max_price: Decimal = Decimal("1000000")
    step_size: Decimal = Decimal("0.00001")
    min_qty: Decimal = Decimal("0.00001")
    max_qty: Decimal = Decimal("9000")
    market_max_qty: Decimal = Decimal("100")
    min_notional: Decimal = Decimal("5")
    max_notional: Decimal = Decimal("9000000")

    @classmethod
    def for_symbol(cls, symbol: str) -> SymbolSpec:
        quote = next((q for q in QUOTE_ASSETS if symbol.endswith(q) and len(symbol) > len(q)), symbol[-4:])
        base = symbol[: -len(quote)]
        if base == "ETH":
            return cls(symbol, base, quote, step_size=Decimal("0.0001"), min_qty=Decimal("0.0001"))
        return cls(symbol, base, quote)

    @property
    def price_decimals(self) -> int:
        return max(0, -int(self.tick_size.normalize().as_tuple().exponent))

    def exchange_info(self) -> dict[str, object]:
        return {
            "symbol": self.symbol,
            "status": "TRADING",
            "baseAsset": self.base_asset,
            "baseAssetPrecision": 8,
            "quoteAsset": self.quote_asset,
            "quotePrecision": 8,
            "quoteAssetPrecision": 8,
            "baseCommissionPrecision": 8,
            "quoteCommissionPrecision": 8,
            "orderTypes": ORDER_TYPES,
            "icebergAllowed": False,
            "ocoAllowed": True,
            "otoAllowed": False,
            "quoteOrderQtyMarketAllowed": True,
            "allowTrailingStop": False,
            "cancelReplaceAllowed": False,
            "isSpotTradingAllowed": True,
            "isMarginTradingAllowed": False,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": f"{self.min_price:.8f}",
                    "maxPrice": f"{self.max_price:.8f}",
                    "tickSize": f"{self.tick_size:.8f}",
                },
                {
                    "filterType": "LOT_SIZE",
                    "minQty": f"{self.min_qty:.8f}",
                    "maxQty": f"{self.max_qty:.8f}",
                    "stepSize": f"{self.step_size:.8f}",
                },
                {
                    "filterType": "MARKET_LOT_SIZE",
                    "minQty": "0.00000000",
                    "maxQty": f"{self.market_max_qty:.8f}",
                    "stepSize": "0.00000000",
                },
                {
                    "filterType": "NOTIONAL",
                    "minNotional": f"{self.min_notional:.8f}",
                    "applyMinToMarket": True,
                    "maxNotional": f"{self.max_notional:.8f}",
                    "applyMaxToMarket": False,
                    "avgPriceMins": 5,
                },
            ],
            "permissions": [],
            "permissionSets": [["SPOT"]],
            "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
            "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
        }
