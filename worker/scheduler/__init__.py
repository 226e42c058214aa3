"""When traders run: timer jobs per trader on the market clock (`scheduler`, `timers`), the UTC grid trigger
(`grid`), and the trader sync that keeps the jobs in step with the user's traders (`trader_sync`: Realtime
plus reconciles)."""
