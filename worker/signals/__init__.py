"""The signal run: fresh data into the sandbox, matches into `signals` rows, each analysed and handed on.

    engine = SignalEngine(runner, snapshots, klines=..., signals=..., analysis=..., executor=...)  # app.py
    report = await engine.run_trader(trader, "timer")   # what the scheduler's jobs call

Modules: `engine` (the run, the match pipeline, and the DecisionExecutor it hands decisions to),
`analysis` (analyze-signal client and budget), `snapshots` (shared sweep data), `market_data` (ticker
dict and marketData). The signals table itself is `worker.db.signals`.

Per match: a cooldown and live-signal check, a `signals` row with an id the worker generated (status
`new`), the `analyze-signal` Edge Function with the same requestId on every retry, the decision checked
with the shared schema and handed to the DecisionExecutor. A signal whose analysis fails for good is
closed with the reason, and a `new` signal nobody is working on (a crash mid-analysis, an executor that
left it) is closed by the stranded-signal sweep; so no signal stays `new` and blocks its symbol for ever.
"""
