"""The run-time namespace of signal code: safe builtins, `math`, the helpers and RestrictedPython's guards.

Attribute access is an allow-list per exact type: an object whose type is not listed has no attributes
at all for signal code (functions, generators, types, exceptions, modules ...), so the routes to frames,
globals and code objects that do not start with an underscore (`gi_frame`, `f_globals`, `str.format`
field lookups, numpy's `tofile`/`ctypes`/`base`) are closed even if the compile-time checks missed one.
Writes go only to the lists, dicts and sets the code built itself: every value we hand in is immutable
(read-only arrays, mapping proxies, tuples, frozen dataclasses).
"""

from __future__ import annotations

import builtins
import math
import operator
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from worker.indicators import helpers
from worker.market.klines import KLINE_FIELDS, Klines
from worker.sandbox.compiler import HELPER_NAMES, SAFE_BUILTIN_NAMES

MATH_NAMES = frozenset(name for name in dir(math) if not name.startswith("_"))


class MathModule:
    """What signal code sees as `math`: the public functions and constants, nothing else."""

    def __init__(self) -> None:
        for name in MATH_NAMES:
            setattr(self, name, getattr(math, name))

    def __repr__(self) -> str:
        return "<module 'math'>"


MATH = MathModule()

_NUMERIC_ARRAY_METHODS = frozenset(
    {
        "shape", "size", "ndim", "mean", "std", "var", "min", "max", "sum", "prod", "argmin", "argmax",
        "cumsum", "cumprod", "copy", "tolist", "round", "any", "all", "item", "clip",
    }
)  # fmt: skip
# No `format`/`format_map`: a format string can look up attributes ("{0.__class__}").
_STRING_METHODS = frozenset(
    {
        "lower", "upper", "startswith", "endswith", "strip", "lstrip", "rstrip", "split", "replace",
        "join", "find", "count", "isdigit", "isalpha", "isupper", "islower", "removeprefix",
        "removesuffix", "partition", "rpartition",
    }
)  # fmt: skip
_ALLOWED_ATTRIBUTES: dict[type, frozenset[str]] = {
    Klines: frozenset({*KLINE_FIELDS, "closed"}),
    np.ndarray: _NUMERIC_ARRAY_METHODS,
    np.float64: frozenset({"item", "is_integer"}),
    np.float32: frozenset({"item"}),
    np.int64: frozenset({"item"}),
    np.bool_: frozenset({"item"}),
    float: frozenset({"is_integer"}),
    int: frozenset({"bit_length"}),
    str: _STRING_METHODS,
    list: frozenset(
        {"append", "extend", "insert", "pop", "index", "count", "reverse", "sort", "copy", "clear", "remove"}
    ),
    tuple: frozenset({"index", "count"}),
    dict: frozenset({"get", "keys", "values", "items", "copy", "update", "pop", "setdefault", "clear"}),
    MappingProxyType: frozenset({"get", "keys", "values", "items"}),
    set: frozenset({"add", "discard", "remove", "pop", "union", "intersection", "difference", "copy"}),
    frozenset: frozenset({"union", "intersection", "difference", "issubset", "issuperset"}),
}
_ALLOWED_ATTRIBUTES[MathModule] = MATH_NAMES
# One set lookup per attribute access: signal code in a loop calls this for every `out.append`.
_ALLOWED_PAIRS = frozenset(
    (kind, name) for kind, names in _ALLOWED_ATTRIBUTES.items() for name in names if not name.startswith("_")
)
_WRITABLE_TYPES = (list, dict, set)

_INPLACE_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "+=": operator.iadd, "-=": operator.isub, "*=": operator.imul, "/=": operator.itruediv,
    "//=": operator.ifloordiv, "%=": operator.imod, "**=": operator.ipow, "<<=": operator.ilshift,
    ">>=": operator.irshift, "|=": operator.ior, "^=": operator.ixor, "&=": operator.iand,
}  # fmt: skip


def guarded_getattr(obj: object, name: str) -> Any:
    """`obj.name` for signal code: only the attributes listed for the object's exact type."""
    if (type(obj), name) in _ALLOWED_PAIRS:
        return getattr(obj, name)
    raise AttributeError(f"{_type_name(obj)} has no attribute {name!r} available to signal code")


def guarded_getitem(obj: Any, key: Any) -> Any:
    """`obj[key]` for signal code (not on types: `enumerate[int]` would build typing objects)."""
    if isinstance(obj, type):
        raise TypeError("types cannot be subscripted in signal code")
    return obj[key]


def guarded_write(obj: Any) -> Any:
    """The target of `obj[k] = v` / `obj.a = v`: only lists, dicts and sets the code created itself."""
    if type(obj) in _WRITABLE_TYPES:
        return obj
    raise TypeError(f"{_type_name(obj)} cannot be changed by signal code")


def guarded_inplace(op: str, left: Any, right: Any) -> Any:
    """`left op= right` (RestrictedPython turns augmented assignments into this call)."""
    function = _INPLACE_OPERATORS.get(op)
    if function is None:
        raise TypeError(f"operator {op} is not supported")
    return function(left, right)


def guarded_apply(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Calls with `*args` / `**kwargs`."""
    return function(*args, **kwargs)


def unpack_sequence(value: Any, spec: object, getiter: object) -> Any:
    """`a, b = value` (and `for a, b in ...` items): the interpreter's own unpacking.

    RestrictedPython's versions exist to route every nested iteration through `_getiter_`; ours is the
    plain `iter`, so they would only add a Python call per item (a fivefold slowdown of such loops).
    """
    return value


def safe_builtins() -> dict[str, Any]:
    """The builtins signal code may use, and nothing else (no `__import__`, so no import either)."""
    namespace: dict[str, Any] = {name: getattr(builtins, name) for name in SAFE_BUILTIN_NAMES}
    namespace.update({"True": True, "False": False, "None": None})
    return namespace


def program_globals(helper_functions: Mapping[str, Callable[..., Any]] | None = None) -> dict[str, Any]:
    """A fresh global namespace for one program (`helper_functions` replaces the plain helpers, e.g. with
    memoising wrappers)."""
    chosen = helper_functions or {name: getattr(helpers, name) for name in HELPER_NAMES}
    if set(chosen) != set(HELPER_NAMES):
        raise ValueError("the helper functions must be exactly the catalog's helpers")
    namespace: dict[str, Any] = {
        "__builtins__": safe_builtins(),
        "__name__": "signal",
        "math": MATH,
        "_getattr_": guarded_getattr,
        "_getitem_": guarded_getitem,
        "_write_": guarded_write,
        "_getiter_": iter,
        "_iter_unpack_sequence_": unpack_sequence,
        "_unpack_sequence_": unpack_sequence,
        "_inplacevar_": guarded_inplace,
        "_apply_": guarded_apply,
    }
    namespace.update(chosen)
    return namespace


def freeze(value: Any) -> Any:
    """Module-level constants made immutable, so nothing carries over from one check to the next."""
    if type(value) in (list, tuple):
        return tuple(freeze(item) for item in value)
    if type(value) is dict:
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    if type(value) is set:
        return frozenset(value)
    return value


def freeze_module_constants(namespace: dict[str, Any], names: Iterable[str]) -> None:
    for name in names:
        if name in namespace:
            namespace[name] = freeze(namespace[name])


def _type_name(obj: object) -> str:
    return type(obj).__name__
