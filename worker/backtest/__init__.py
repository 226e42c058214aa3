"""Backtests: a trader's strategy over the recorded market, through the worker's own signal run and trading.

    report = await run_backtest(BacktestSpec(trader, symbols, start_ms, end_ms), load_directory(path),
                                pool=pool, analyst=lambda tables, clock: DefaultLevels(trader, tables))

`run` drives the parts moment by moment (its docstring states the order), `market` replays the recordings
into the stores, `checks` evaluates check_signal for every moment in the sandbox beforehand, `store` is the
backtest's database, `analysts` who judges the signals, `report` what it all came to.
"""
