"""Market data: Binance stream parsing, the live feed (and its Component), REST klines, the kline store and
the latest tickers; `binance_api` is the one import of python-binance (real trading only: the public klines
backfill is a plain httpx GET, so a paper worker never loads it)."""
