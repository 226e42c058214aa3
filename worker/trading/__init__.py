"""Trading: the decision executor, paper and Binance venues, the position monitor, re-analysis, recovery."""
