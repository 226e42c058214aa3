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
import sys
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from worker.indicators import helpers
from worker.market.klines import KLINE_FIELDS, Klines
from worker.sandbox import dialect
from worker.sandbox.compiler import (
    DECLINED_NAME,
    FREEZE_NAME,
    HELPER_NAMES,
    LIST_NAME,
    TYPE_NAME,
    list_method_name,
)


class MathModule:
    """What signal code sees as `math`: the public functions and constants, nothing else."""

    def __init__(self) -> None:
        for name in dialect.MATH_NAMES:
            setattr(self, name, getattr(math, name))

    def __repr__(self) -> str:
        return "<module 'math'>"


MATH = MathModule()

_NUMBER_ATTRIBUTES = frozenset(dialect.NUMBER_ATTRIBUTES)
_ALLOWED_ATTRIBUTES: dict[type, frozenset[str]] = {
    Klines: frozenset({*KLINE_FIELDS, "closed"}),
    np.ndarray: frozenset(dialect.ARRAY_ATTRIBUTES),
    np.float64: _NUMBER_ATTRIBUTES,
    np.float32: _NUMBER_ATTRIBUTES,
    np.int64: _NUMBER_ATTRIBUTES - {"is_integer"},
    np.bool_: frozenset({"item"}),
    float: frozenset({"is_integer"}),
    int: frozenset({"bit_length"}),
    str: frozenset(dialect.STRING_METHODS),
    list: frozenset(dialect.LIST_METHODS),
    tuple: frozenset(dialect.TUPLE_METHODS),
    dict: frozenset(dialect.DICT_METHODS),
    MappingProxyType: frozenset(dialect.READ_ONLY_DICT_METHODS),
    set: frozenset(dialect.SET_METHODS),
    frozenset: frozenset(dialect.FROZENSET_METHODS),
}
_ALLOWED_ATTRIBUTES[MathModule] = frozenset(dialect.MATH_NAMES)
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


class Declined(ValueError):
    """What `raise ValueError("reason")` in signal code raises: the check is False and the reason logged.
    A ValueError, so the code's own `except ValueError` still catches it."""


def loaded_modules_only(
    name: str, globals: object = None, locals: object = None, fromlist: object = (), level: int = 0
) -> None:
    """The sandbox's `__import__`: numpy's C methods (`ndarray.max`, `.mean`, `.std` ...) look up the module
    they need through the calling frame's builtins, and signal code is that frame. Signal code cannot name
    this function (the compiler refuses underscores and import statements), and it hands no module to
    anyone: CPython's PyImport_Import discards the result and reads `sys.modules` itself. A module not
    loaded before the guards went up is never loaded."""
    if level != 0 or name not in sys.modules:
        raise ImportError(f"signal code cannot import {name}")


def safe_builtins() -> dict[str, Any]:
    """The builtins signal code may use, the exceptions it may catch, and nothing else."""
    names = (*dialect.SAFE_BUILTIN_NAMES, *dialect.CATCHABLE_EXCEPTIONS)
    namespace: dict[str, Any] = {name: getattr(builtins, name) for name in names}
    namespace.update({"True": True, "False": False, "None": None, "__import__": loaded_modules_only})
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
        DECLINED_NAME: Declined,
        FREEZE_NAME: freeze,
        TYPE_NAME: type,
        LIST_NAME: list,
        **{list_method_name(method): getattr(list, method) for method in dialect.LIST_METHODS},
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
