"""Market data: Binance stream parsing, the live feed (and its Component), REST klines, the kline store and
the latest tickers; `binance_api` is the one import of python-binance."""
