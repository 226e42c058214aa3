"""Model-style signal code: one strategy per file, each exactly as a model would answer generate-strategy.

Written by hand from generate-strategy's prompt (the dialect and the helper catalog) the way a capable
model writes: docstrings, constants, its own indicator loops, type hints, habits such as `import math`,
`from typing import ...`, try/except and `raise ValueError`. They were not written against the compiler's
rules one by one. The files are data (ruff skips this folder); `strategies()` reads them.
"""

from __future__ import annotations

import ast
from pathlib import Path

from worker.domain.intervals import INTERVAL_MS

FOLDER = Path(__file__).parent
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def strategies() -> list[tuple[str, str]]:
    """(name, code) of every strategy, in file order."""
    return [(path.stem, path.read_text()) for path in sorted(FOLDER.glob("[0-9]*.py"))]


def timeframes(code: str) -> list[str]:
    """The timeframes the code names (what the model lists in the strategy's `timeframes`)."""
    named = {
        node.value
        for node in ast.walk(ast.parse(code))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in INTERVAL_MS
    }
    return [timeframe for timeframe in INTERVAL_MS if timeframe in named]
