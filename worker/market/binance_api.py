"""python-binance, imported once for every part that calls Binance's REST API (klines, trading)."""

from __future__ import annotations

import importlib
import warnings

with warnings.catch_warnings():
    # python-binance 1.0.37 imports websockets' legacy client at import time (a DeprecationWarning under
    # websockets >= 14); we never use its websocket code.
    warnings.simplefilter("ignore", DeprecationWarning)
    _client_module = importlib.import_module("binance.async_client")
    _errors_module = importlib.import_module("binance.exceptions")

AsyncClient = _client_module.AsyncClient
BinanceAPIException = _errors_module.BinanceAPIException
BinanceRequestException = _errors_module.BinanceRequestException
