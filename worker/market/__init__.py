"""Market data: Binance stream parsing, the live feed, the kline store and the latest tickers."""
