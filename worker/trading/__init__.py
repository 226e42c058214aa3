"""Trading: decisions into orders, positions guarded until they close.

Modules: `executor` (routes each decision), `orders` (record -> send -> apply the fill), `protection`
(stops and targets resting on the exchange, lifted around every order, reconciled; closing at market),
`positions` (the open positions in memory, a lock per trader, the live view), `venue` (the venue protocol
and the paper venue) and `binance_venue`, `monitor` (stops, targets and trailing stops on every ticker)
and `guard` (the component that closes what the monitor triggers), `trailing` (exit rules), `guardrails`
(limits in code), `recovery` (start-up), `reanalysis`, `prices` (from the market stores), `config`.
The rows they read and write are `worker.db.trading` and `worker.db.signals`.
"""
