"""A Binance-Spot-compatible exchange simulator replaying recorded candles (REST, streams, matching)."""
