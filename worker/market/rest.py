"""Klines over Binance REST (python-binance's AsyncClient, pointed at a configurable base URL)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from worker.errors import ConfigError, RateLimited, TransientError
from worker.market.binance_api import AsyncClient, BinanceAPIException, BinanceRequestException

MAX_KLINES_PER_REQUEST = 1000


@dataclass(frozen=True, slots=True)
class RestKline:
    open_time: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class KlineSource(Protocol):
    async def fetch_klines(
        self, symbol: str, interval: str, *, start_ms: int | None, limit: int
    ) -> list[RestKline]:
        """Candles oldest first: from start_ms on, or the newest `limit` when start_ms is None."""
        ...


class BinanceKlineSource:
    """`GET /api/v3/klines` through python-binance; vendor errors become the worker's error tree."""

    def __init__(self, base_url: str, request_timeout_secs: float = 10.0) -> None:
        self._base_url = base_url.rstrip("/")
        self._timeout_secs = request_timeout_secs
        self._client: Any = None

    async def _ensure_client(self) -> Any:
        if self._client is None:
            # Constructed directly (not AsyncClient.create) so nothing pings the production host first.
            client = AsyncClient(requests_params={"timeout": self._timeout_secs})
            client.API_URL = f"{self._base_url}/api"
            self._client = client
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close_connection()
            self._client = None

    async def server_time_ms(self) -> int:
        """`GET /api/v3/time`: the exchange's clock (the market's time, replays included)."""
        client = await self._ensure_client()
        try:
            reply = await client.get_server_time()
            return int(reply["serverTime"])
        except BinanceAPIException as error:
            raise TransientError(f"server time: HTTP {error.status_code} code={error.code}") from error
        except (TimeoutError, BinanceRequestException, aiohttp.ClientError, OSError) as error:
            raise TransientError(f"server time: {error!r}") from error
        except (KeyError, TypeError, ValueError) as error:
            raise TransientError(f"server time: malformed reply: {error!r}") from error

    async def fetch_klines(
        self, symbol: str, interval: str, *, start_ms: int | None, limit: int
    ) -> list[RestKline]:
        client = await self._ensure_client()
        params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": min(limit, 1000)}
        if start_ms is not None:
            params["startTime"] = start_ms
        what = f"klines symbol={symbol} interval={interval} start_ms={start_ms}"
        try:
            rows = await client.get_klines(**params)
        except BinanceAPIException as error:
            if error.status_code in (418, 429):
                retry_after = error.response.headers.get("Retry-After") if error.response else None
                raise RateLimited(
                    f"{what}: HTTP {error.status_code} code={error.code}",
                    float(retry_after) if retry_after else None,
                ) from error
            if error.status_code >= 500:
                raise TransientError(f"{what}: HTTP {error.status_code}") from error
            raise ConfigError(f"{what}: rejected code={error.code} {error.message}") from error
        except (TimeoutError, BinanceRequestException, aiohttp.ClientError, OSError) as error:
            raise TransientError(f"{what}: {error!r}") from error
        try:
            return [
                RestKline(int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]))
                for r in rows
            ]
        except (TypeError, ValueError, IndexError) as error:
            raise TransientError(f"{what}: malformed reply: {error!r}") from error
