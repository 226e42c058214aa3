"""Helper results remembered per snapshot: twenty traders asking for RSI(14) of BTCUSDT 1h compute it once.

A sandbox process keeps one memo per snapshot it has mapped (`SnapshotReader.memo`), so the results are
dropped with the snapshot. An entry's key is (helper, series, arguments). The series is named by its id,
and the entry holds on to it, so the id cannot pass to another series while the entry lives: in a sandbox
the series are the snapshot's read-only views, one per (symbol, timeframe). Arguments are bound to the
helper's parameters with the defaults filled in, so `get_latest_rsi(k)`, `get_latest_rsi(k, 14)` and
`get_latest_rsi(k, period=14)` share an entry, and they carry their types, so `get_latest_rsi(k, 14.0)`
still raises as the helper does. Anything unusual (not a series, an unknown keyword, an unhashable
argument) is computed, not remembered.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, get_type_hints

from worker.indicators import helpers
from worker.market.klines import FloatArray, Klines

MAX_ENTRIES = 50_000  # per snapshot: 100 symbols x 3 timeframes x ~10 distinct calls is ~3,000

Memo = dict[tuple[Any, ...], Any]


def memoising_helpers(names: tuple[str, ...], current: Callable[[], Memo]) -> dict[str, Callable[..., Any]]:
    """The helpers `names`, each remembering its results in the memo `current()` returns when called.

    The getters of whole arrays (`get_closes`, ...) are returned as they are: nothing to compute.
    """
    functions = {name: getattr(helpers, name) for name in names}
    return {
        name: function if get_type_hints(function)["return"] == FloatArray else _memoised(function, current)
        for name, function in functions.items()
    }


def _memoised(function: Callable[..., Any], current: Callable[[], Memo]) -> Callable[..., Any]:
    parameters = list(inspect.signature(function).parameters.values())[1:]  # after the series
    names = tuple(parameter.name for parameter in parameters)
    defaults = tuple(parameter.default for parameter in parameters)
    if inspect.Parameter.empty in defaults:
        raise ValueError(f"helper {function.__name__}: every parameter after the series needs a default")
    count = len(names)

    def call(k: Klines, *args: Any, **kwargs: Any) -> Any:
        if type(k) is not Klines:
            return function(k, *args, **kwargs)
        if kwargs:
            bound = _bind(names, defaults, args, kwargs)
            if bound is None:
                return function(k, *args, **kwargs)  # raises the helper's own TypeError
            args = bound
        elif len(args) < count:
            args += defaults[len(args) :]
        key = (function, id(k), args, tuple(map(type, args)))
        entries = current()
        try:
            return entries[key][1]
        except KeyError:
            pass
        except TypeError:  # an unhashable argument
            return function(k, *args)
        result = function(k, *args)
        if len(entries) < MAX_ENTRIES:
            entries[key] = (k, result)
        return result

    call.__name__ = function.__name__
    call.__doc__ = function.__doc__
    return call


def _bind(
    names: tuple[str, ...], defaults: tuple[Any, ...], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...] | None:
    """The arguments by position, defaults filled in; None if a keyword is unknown or given twice."""
    rest = names[len(args) :]
    if any(name not in rest for name in kwargs):
        return None
    return args + tuple(
        kwargs.get(name, default) for name, default in zip(rest, defaults[len(args) :], strict=True)
    )
