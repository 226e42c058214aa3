"""Benchmarks: each `bench_*.py` module has `run() -> list[Measurement]`; `python -m bench` runs them all."""
