"""Run every benchmark module under bench/ (or those named on the command line) and print one table."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time
from pathlib import Path

from bench.measurement import Measurement, format_table


def main(selected: list[str]) -> int:
    names = sorted(
        module.name
        for module in pkgutil.iter_modules([str(Path(__file__).parent)])
        if module.name.startswith("bench_") and (not selected or module.name in selected)
    )
    rows: list[tuple[str, Measurement]] = []
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        started = time.monotonic()
        measurements = importlib.import_module(f"bench.{name}").run()
        rows += [(name.removeprefix("bench_"), measurement) for measurement in measurements]
        print(f"  done in {time.monotonic() - started:.1f}s", file=sys.stderr, flush=True)
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
