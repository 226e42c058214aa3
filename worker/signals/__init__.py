"""The signal run: fresh data into the sandbox, matches into `signals` rows, each analysed and handed on.

    engine = SignalEngine(runner, snapshots, signal_store, analysis, executor, settings, metrics=...)
    report = await engine.run(trader, trigger="timer")    # called by the scheduler's jobs

Per match: a cooldown and live-signal check, a `signals` row with an id the worker generated (status
`new`), the `analyze-signal` Edge Function with the same requestId on every retry, the decision checked
with the shared schema and handed to the DecisionExecutor. A signal whose analysis fails for good is
closed with the reason, and a `new` signal nobody is working on (a crash mid-analysis, an executor that
left it) is closed by the stranded-signal sweep; so no signal stays `new` and blocks its symbol for ever.
"""
