"""The signal-code dialect in one place: the compiler, the run-time namespace and the model's prompt read it.

`python -m worker.sandbox.dialect > supabase/functions/_shared/signal_dialect.json` regenerates the file
generate-strategy builds its prompt from; a test fails when that file is out of date. Every name here is
argued against the threat model in `worker/sandbox/__init__.py` and attacked in tests/worker/sandbox.
"""

from __future__ import annotations

import json
import math
from typing import Any

# Bumped whenever the rules change, so a program compiled under older rules is never reused.
POLICY_VERSION = 2

# Pure functions and constructors of plain values. Each returns numbers, strings, containers the code owns
# or lazy iterators with no attributes; none reaches a frame, a module, a type's internals or I/O.
SAFE_BUILTIN_NAMES = (
    "abs", "min", "max", "len", "range", "sum", "round", "any", "all", "sorted", "enumerate", "zip",
    "float", "int", "bool", "list", "reversed", "tuple", "dict", "set", "str", "map", "filter",
    "isinstance", "pow", "divmod",
)  # fmt: skip

# Exceptions a strategy may catch: the ones missing or odd data raises. Never BaseException (the CPU
# deadline), MemoryError, RecursionError or AttributeError (the guards' refusals).
CATCHABLE_EXCEPTIONS = (
    "ArithmeticError", "ZeroDivisionError", "OverflowError", "FloatingPointError", "LookupError",
    "IndexError", "KeyError", "ValueError", "TypeError",
)  # fmt: skip
# What `except Exception:` catches in signal code (the compiler rewrites it to this tuple).
CATCH_ALL = ("ArithmeticError", "LookupError", "ValueError", "TypeError")
# `raise ValueError("why")` makes the check False and logs why; no other exception can be raised.
DECLINE_EXCEPTION = "ValueError"

# Imports a model writes out of habit that change nothing here: math is already bound, annotations are
# dropped before compiling. `from math import sqrt` becomes `sqrt = math.sqrt`.
IGNORED_IMPORTS = ("math", "typing", "__future__")

MATH_NAMES = tuple(sorted(name for name in dir(math) if not name.startswith("_")))

# Read-only views of numbers: no `base`, `data`, `ctypes`, `view`, `tofile`, `dump`, `setflags`, `astype`.
ARRAY_ATTRIBUTES = (
    "shape", "size", "ndim", "mean", "std", "var", "min", "max", "sum", "prod", "argmin",
    "argmax", "argsort", "cumsum", "cumprod", "copy", "tolist", "round", "any", "all", "item", "clip",
    "dot", "ravel", "flatten", "nonzero", "searchsorted",
)  # fmt: skip
NUMBER_ATTRIBUTES = ("item", "is_integer")
# No `format`/`format_map`: a format string can look up attributes ("{0.__class__}").
STRING_METHODS = (
    "lower", "upper", "startswith", "endswith", "strip", "lstrip", "rstrip", "split", "replace", "join",
    "find", "count", "isdigit", "isalpha", "isupper", "islower", "removeprefix", "removesuffix",
    "partition", "rpartition", "title", "capitalize", "zfill", "ljust", "rjust", "center",
)  # fmt: skip
LIST_METHODS = (
    "append", "extend", "insert", "pop", "index", "count", "reverse", "sort", "copy", "clear", "remove",
)  # fmt: skip
TUPLE_METHODS = ("index", "count")
DICT_METHODS = ("get", "keys", "values", "items", "copy", "update", "pop", "setdefault", "clear")
READ_ONLY_DICT_METHODS = ("get", "keys", "values", "items")
SET_METHODS = (
    "add", "discard", "remove", "pop", "union", "intersection", "difference", "copy", "issubset",
    "issuperset",
)  # fmt: skip
FROZENSET_METHODS = ("union", "intersection", "difference", "issubset", "issuperset")

# The rules in the words the prompt uses; the compiler's refusals use the same terms.
RULES = (
    "Define `def check_signal(symbol, ticker, klines):` at module level; it returns True when the entry "
    "setup is present on the latest data, else False.",
    "At module level write only constants (numbers, strings, and tuples, lists or dicts of them) and "
    "functions; every other statement goes inside a function.",
    "Do not import anything: `math` is already available, and numpy is not importable (there is no `np`). "
    "The kline fields are numpy arrays: use their methods (`closes[-20:].mean()`, `.std()`, `.max()`, "
    "`.argmax()`) or the helpers.",
    "Arrays handed in are read-only: slice and read them; to change values, copy first (`list(closes)`, "
    "`closes.tolist()` or `closes.copy()`). Differences: `closes[1:] - closes[:-1]`.",
    "Names and attributes must not start with an underscore (a lone `_` as a throwaway variable is fine), "
    "and strings must not contain a double underscore.",
    "For missing or short data, check lengths first and return False, or use "
    "`try: ... except (IndexError, KeyError, ValueError, ZeroDivisionError): return False`. Only these "
    "exceptions can be caught: "
    + ", ".join(CATCHABLE_EXCEPTIONS)
    + "; `except Exception:` catches "
    + ", ".join(CATCH_ALL)
    + ". No bare `except:` and no `finally:`.",
    '`raise ValueError("reason")` makes the check False and logs the reason; no other exception can be '
    "raised.",
    "Parameter defaults are frozen: a list default becomes a tuple and a dict default read-only, so "
    "nothing carries over from one check to the next. Module constants are frozen the same way.",
    "Not available: classes, yield, with, global, nonlocal, del, match, async, decorators, print, input, "
    "open, eval, exec, getattr, setattr, hasattr, type, vars, globals, str.format (use f-strings or %).",
    "Each check must finish within its deadline (a few hundred milliseconds) in little memory: no endless "
    "loops, no huge lists.",
)


def describe() -> dict[str, Any]:
    """The dialect as a JSON-ready dict, in the order the prompt states it."""
    return {
        "policy_version": POLICY_VERSION,
        "rules": list(RULES),
        "builtins": list(SAFE_BUILTIN_NAMES),
        "catchable_exceptions": list(CATCHABLE_EXCEPTIONS),
        "math": list(MATH_NAMES),
        "array_attributes": list(ARRAY_ATTRIBUTES),
        "string_methods": list(STRING_METHODS),
        "list_methods": list(LIST_METHODS),
        "dict_methods": list(DICT_METHODS),
    }


def render() -> str:
    """The dialect exactly as the committed file holds it."""
    return json.dumps(describe(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
