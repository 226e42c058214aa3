"""Run every benchmark module under bench/ (or those named on the command line) and print one table.

A module that sets `NEEDS_STACK = True` runs against the local stack: the stack is started before the first
such module if it was not running, and stopped again at the end only then (as `make test` does). A module
that fails is reported after the table, and the run exits 1, but the others still run.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
import traceback
from pathlib import Path
from types import ModuleType

from bench.measurement import Measurement, format_table
from devstack.stack import DevStack

Row = tuple[str, Measurement]


def run_benchmarks(modules: list[ModuleType], stack: DevStack) -> tuple[list[Row], list[str]]:
    """Run each module's run(); return the table's rows and one line per module that failed."""
    rows: list[Row] = []
    failures: list[str] = []
    started_stack = False
    try:
        for module in modules:
            name = module.__name__.rsplit(".", 1)[-1]
            if getattr(module, "NEEDS_STACK", False) and not stack.is_up():
                print("starting the local stack", file=sys.stderr, flush=True)
                started_stack = started_stack or not any(part.running for part in stack.status())
                stack.up()
            print(f"running {name} ...", file=sys.stderr, flush=True)
            started = time.monotonic()
            try:
                measurements = module.run()
            except Exception as error:  # one broken benchmark must not hide the others' figures
                traceback.print_exc()
                failures.append(f"{name} failed: {type(error).__name__}: {error}")
                continue
            rows += [(name.removeprefix("bench_"), measurement) for measurement in measurements]
            print(f"  done in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    finally:
        if started_stack:
            print("stopping the local stack", file=sys.stderr, flush=True)
            stack.down()
    return rows, failures


def main(selected: list[str]) -> int:
    names = sorted(
        module.name
        for module in pkgutil.iter_modules([str(Path(__file__).parent)])
        if module.name.startswith("bench_") and (not selected or module.name in selected)
    )
    unknown = sorted(set(selected) - set(names))
    if unknown:
        print(f"no such benchmark: {', '.join(unknown)} (choose from bench/bench_*.py)", file=sys.stderr)
        return 2
    modules = [importlib.import_module(f"bench.{name}") for name in names]
    rows, failures = run_benchmarks(modules, DevStack())
    print(format_table(rows))
    for failure in failures:
        print(failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
