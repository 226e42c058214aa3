"""Klines over Binance's public REST API (`GET /api/v3/klines`, httpx, a configurable base URL).

A public market-data call needs no signing, so it does not go through python-binance: a paper-mode worker
then never imports it (about 14 MB of resident memory: its dependencies, dateparser, regex, pycryptodome).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from worker.errors import ConfigError, RateLimited, TransientError
from worker.market.reachability import Reachability
from worker.retry import retry_after_secs
from worker.tls import client_tls

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
    """`GET /api/v3/klines` on one pooled httpx client; Binance's errors become the worker's error tree."""

    def __init__(
        self, base_url: str, request_timeout_secs: float = 10.0, *, reachability: Reachability | None = None
    ) -> None:
        api_url = f"{base_url.rstrip('/')}/api/v3"
        self._http = httpx.AsyncClient(
            base_url=api_url, timeout=request_timeout_secs, verify=client_tls(api_url)
        )
        self._reachability = reachability or Reachability()

    async def close(self) -> None:
        await self._http.aclose()

    async def server_time_ms(self) -> int:
        """`GET /api/v3/time`: the exchange's clock (the market's time, replays included)."""
        reply = await self._get("/time", {}, "server time")
        try:
            return int(reply["serverTime"])
        except (KeyError, TypeError, ValueError) as error:
            raise TransientError(f"server time: malformed reply: {error!r}") from error

    async def fetch_klines(
        self, symbol: str, interval: str, *, start_ms: int | None, limit: int
    ) -> list[RestKline]:
        params: dict[str, Any] = {"symbol": symbol, "interval": interval, "limit": min(limit, 1000)}
        if start_ms is not None:
            params["startTime"] = start_ms
        what = f"klines symbol={symbol} interval={interval} start_ms={start_ms}"
        rows = await self._get("/klines", params, what)
        try:
            return [
                RestKline(int(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]))
                for r in rows
            ]
        except (TypeError, ValueError, IndexError, KeyError) as error:
            raise TransientError(f"{what}: malformed reply: {error!r}") from error

    async def _get(self, path: str, params: dict[str, Any], what: str) -> Any:
        try:
            response = await self._http.get(path, params=params)
        except httpx.HTTPError as error:
            self._reachability.unreachable(f"REST {what}: {error!r}")
            raise TransientError(f"{what}: {error!r}") from error
        status = response.status_code
        self._reachability.record_status(status, what)
        if status in (418, 429):  # rate limited, or banned for ignoring it: wait as asked
            raise RateLimited(f"{what}: HTTP {status} {_binance_error(response)}", _retry_after(response))
        if status >= 500:
            raise TransientError(f"{what}: HTTP {status}")
        if status >= 400:
            raise ConfigError(f"{what}: rejected {_binance_error(response)}")
        try:
            return response.json()
        except ValueError as error:
            raise TransientError(f"{what}: malformed reply: {error!r}") from error


def _retry_after(response: httpx.Response) -> float | None:
    return retry_after_secs(response.headers.get("retry-after"))


def _binance_error(response: httpx.Response) -> str:
    """Binance's `{"code": -1121, "msg": "Invalid symbol."}` as `code=-1121 Invalid symbol.`."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if not isinstance(body, dict):
        return str(body)[:200]
    return f"code={body.get('code')} {body.get('msg', '')}".strip()
