"""The machine-readable list of signal helpers the LLM prompt is built from, generated from the code.

`python -m worker.indicators.catalog > supabase/functions/_shared/signal_helpers.json` regenerates the
committed file; a test fails when that file is out of date.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any

from worker.domain.intervals import INTERVAL_MS
from worker.indicators import helpers
from worker.market.klines import KLINE_FIELDS


def signature_text(function: Callable[..., Any]) -> str:
    """`name(k, period=14) -> float`: parameters with defaults, no parameter types, the return type."""
    parameters = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.default is inspect.Parameter.empty:
            parameters.append(parameter.name)
        else:
            parameters.append(f"{parameter.name}={parameter.default!r}")
    returns = str(function.__annotations__.get("return", "None"))
    # Signal code sees plain numpy arrays; our alias means nothing to the model.
    returns = returns.replace("FloatArray", "np.ndarray")
    return f"{function.__name__}({', '.join(parameters)}) -> {returns}"


def first_line(function: Callable[..., Any]) -> str:
    doc = inspect.getdoc(function)
    if not doc:
        raise ValueError(f"helper {function.__name__} has no docstring")
    return doc.splitlines()[0].strip()


def build_catalog() -> dict[str, Any]:
    """The catalog as a JSON-ready dict: helpers (sorted by name), kline fields and timeframes."""
    entries = []
    for name in sorted(helpers.__all__):
        function = getattr(helpers, name)
        entries.append({"name": name, "signature": signature_text(function), "doc": first_line(function)})
    return {"helpers": entries, "kline_fields": list(KLINE_FIELDS), "timeframes": list(INTERVAL_MS)}


def render() -> str:
    """The catalog exactly as the committed file holds it."""
    return json.dumps(build_catalog(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
