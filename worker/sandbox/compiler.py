"""Compiling signal code: our own AST policy, then RestrictedPython's transformer, once per code version.

The policy is an allow-list of syntax (anything not listed is refused with the line and a hint), then
rules on names, attributes, module-level statements and the `check_signal` signature. RestrictedPython
then rewrites attribute, item, iteration and augmented-assignment operations into calls of the guards in
`worker.sandbox.guards`, which the sandbox process supplies at run time (a method call on a variable
holding a list calls list's own method instead: `_ListMethodCalls`). Compiling never runs the code:
the worker compiles in its own process to report problems before the first run, and the sandbox process
compiles the same source again to get the code object it executes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import CodeType

from RestrictedPython.transformer import RestrictingNodeTransformer

from worker.indicators.catalog import build_catalog
from worker.sandbox.dialect import (
    CATCH_ALL,
    CATCHABLE_EXCEPTIONS,
    DECLINE_EXCEPTION,
    IGNORED_IMPORTS,
    LIST_METHODS,
    MATH_NAMES,
    POLICY_VERSION,
    SAFE_BUILTIN_NAMES,
)
from worker.sandbox.errors import SignalCodeError

ENTRY_POINT = "check_signal"
ENTRY_PARAMETERS = ("symbol", "ticker", "klines")
FILENAME = "<signal>"
MAX_SOURCE_CHARS = 100_000  # the traders.signal_code check constraint
# Names the compiled code calls that signal code itself can never write (they start with an underscore).
DECLINED_NAME = "_declined_"  # raise ValueError(...) -> a ValueError subclass the sandbox reads as False
FREEZE_NAME = "_freeze_"  # parameter defaults -> immutable copies
TYPE_NAME, LIST_NAME = "_type_", "_list_"  # `type` and `list`, for the list method calls below


def list_method_name(method: str) -> str:
    """The name under which the compiled code calls list's own `method` (see _ListMethodCalls)."""
    return f"_list_{method}_"


HELPER_NAMES = tuple(entry["name"] for entry in build_catalog()["helpers"])
AVAILABLE_NAMES = frozenset(
    {*SAFE_BUILTIN_NAMES, *HELPER_NAMES, *CATCHABLE_EXCEPTIONS, "math", "True", "False", "None"}
)
_SHOWN_NAMES = "the helpers, math and the builtins " + " ".join(SAFE_BUILTIN_NAMES)
_NO_NUMPY = (
    "numpy is not importable in signal code (there is no np): the kline fields are numpy arrays already, so "
    "use their methods (closes[-20:].mean(), .std(), .max(), .argmax()) or the helpers"
)
_IMPORT_REFUSED = f"imports are not allowed: math is already available; {_NO_NUMPY}"

# Builtins and names people reach for that are deliberately absent, with what to write instead.
_FORBIDDEN_NAMES = {
    **{
        name: "signal code has no access to the interpreter; write the code directly"
        for name in (
            "eval", "exec", "compile", "globals", "locals", "vars", "dir", "id", "help", "breakpoint",
            "memoryview", "exit", "quit", "super", "object", "classmethod", "staticmethod", "property",
        )
    },
    **{
        name: "read attributes directly (k.close) and use .get(key, default) on dicts"
        for name in ("getattr", "setattr", "delattr", "hasattr")
    },
    "type": "use isinstance(value, float) (or int, str, list, tuple, dict)",
    "issubclass": "use isinstance(value, float) (or int, str, list, tuple, dict)",
    "callable": "call only the helpers and your own functions",
    "open": "signal code has no I/O: it reads only its arguments",
    "input": "signal code has no I/O: it reads only its arguments",
    "print": 'signal code has no output: remove print, or raise ValueError("reason") to log why the check '
    "is False",
}  # fmt: skip
# Names that are not available, with the replacement a model needs.
_NAME_HINTS = {
    "np": _NO_NUMPY,
    "numpy": _NO_NUMPY,
    "pd": "pandas is not available: work on the kline arrays and lists",
    "talib": "TA-Lib is not importable: use the helpers (get_latest_rsi, get_latest_macd, ...)",
    "Exception": 'raise ValueError("reason") to make the check False; catch with except (IndexError, '
    "ValueError, ...) or except Exception",
    "BaseException": "catch only " + ", ".join(CATCHABLE_EXCEPTIONS),
    "nan": "use math.nan", "inf": "use math.inf",
    "frozenset": "use a tuple or set", "Klines": "klines[timeframe] is already a Klines value",
}  # fmt: skip

# Attributes without a leading underscore that still lead to interpreter internals, or to I/O through
# numpy. The run-time guard allows only listed attributes per type anyway; this gives an early message.
_INTERNALS = "signal code has no access to the interpreter"
_FORBIDDEN_ATTRIBUTES = {
    **dict.fromkeys(
        ("mro", "gi_frame", "gi_code", "gi_yieldfrom", "gi_running", "cr_frame", "cr_code", "ag_frame",
         "ag_code", "f_globals", "f_locals", "f_builtins", "f_back", "f_code", "tb_frame", "tb_next",
         "co_code", "co_consts", "func_globals", "func_code", "obj", "with_traceback"),
        _INTERNALS,
    ),
    **dict.fromkeys(("tofile", "dump", "dumps"), "signal code has no I/O"),
    **dict.fromkeys(
        ("ctypes", "base", "data", "flags", "setflags", "view"),
        "arrays are read-only: copy one with .copy() or list(...) to change it",
    ),
    "astype": "the arrays are float64 already: use them as they are, or float(x) for one value",
    "format": 'use an f-string (f"{rsi:.1f}") or % formatting',
    "format_map": 'use an f-string (f"{rsi:.1f}") or % formatting',
}  # fmt: skip

_OPERATORS: tuple[type[ast.AST], ...] = (
    ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.LShift, ast.RShift,
    ast.BitOr, ast.BitXor, ast.BitAnd, ast.And, ast.Or, ast.UAdd, ast.USub, ast.Not, ast.Invert, ast.Eq,
    ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Is, ast.IsNot, ast.In, ast.NotIn,
)  # fmt: skip
_ALLOWED_NODES: frozenset[type[ast.AST]] = frozenset(
    {
        ast.Module, ast.FunctionDef, ast.Return, ast.Assign, ast.AugAssign, ast.For, ast.While, ast.If,
        ast.Expr, ast.Pass, ast.Break, ast.Continue, ast.Assert, ast.BoolOp, ast.NamedExpr, ast.BinOp,
        ast.UnaryOp, ast.Lambda, ast.IfExp, ast.Dict, ast.Set, ast.ListComp, ast.SetComp, ast.DictComp,
        ast.GeneratorExp, ast.Compare, ast.Call, ast.Constant, ast.Attribute, ast.Subscript, ast.Starred,
        ast.Name, ast.List, ast.Tuple, ast.Slice, ast.arguments, ast.arg, ast.keyword, ast.comprehension,
        ast.Load, ast.Store, ast.Try, ast.ExceptHandler, ast.Raise, ast.JoinedStr, ast.FormattedValue,
        *_OPERATORS,
    }
)  # fmt: skip
_ASYNC = "async code is not allowed: write a plain def"
_REFUSED_NODES: dict[type[ast.AST], str] = {
    ast.Import: _IMPORT_REFUSED,
    ast.ImportFrom: _IMPORT_REFUSED,
    ast.ClassDef: "classes are not allowed: write functions, and keep related values in a dict or tuple",
    ast.Global: "global is not allowed: pass values in as arguments and return results",
    ast.Nonlocal: "nonlocal is not allowed: pass values in as arguments and return results",
    ast.TryStar: "except* is not allowed: write except (IndexError, ValueError):",
    ast.With: "with statements are not allowed: signal code has no files or locks; write the body alone",
    ast.AsyncWith: _ASYNC,
    ast.AsyncFor: _ASYNC,
    ast.AsyncFunctionDef: _ASYNC,
    ast.Await: _ASYNC,
    ast.Yield: "generators (yield) are not allowed: build and return a list",
    ast.YieldFrom: "generators (yield) are not allowed: build and return a list",
    ast.Delete: "del is not allowed: assign a new value, or build a new list without the item",
    ast.Match: "match statements are not allowed: use if/elif",
    ast.MatMult: "the @ operator is not allowed: use a.dot(b)",
}
_RAISE_HINT = (
    f'only raise {DECLINE_EXCEPTION}("reason") is allowed: it makes the check False and logs the reason '
    "(or return False)"
)
_CATCH_HINT = (
    "only these exceptions can be caught: "
    + ", ".join(CATCHABLE_EXCEPTIONS)
    + "; write e.g. except (IndexError, KeyError, ValueError, ZeroDivisionError): (except Exception: "
    "catches " + ", ".join(CATCH_ALL) + ")"
)


@dataclass(frozen=True, slots=True)
class SignalProgram:
    """A trader's signal code that passed every check, with the code object the sandbox executes.

    `key` identifies the source under the current rules; sandbox processes cache compiled programs by it.
    """

    source: str
    key: str
    trader_id: str | None = None
    version: int | None = None
    code: CodeType = field(repr=False, compare=False, kw_only=True)


def compile_signal(
    code: str, *, trader_id: str | None = None, version: int | None = None, key: str | None = None
) -> SignalProgram:
    """Check and compile signal code defining `check_signal(symbol, ticker, klines) -> bool`.

    `key` is the source's `program_key` when the caller already has it (a sandbox process is told it).

    Raises:
        SignalCodeError: a syntax error or a forbidden construct, with its line and what to do instead.
    """
    if not isinstance(code, str):
        raise SignalCodeError("signal code must be text")
    if not code.strip():
        raise SignalCodeError("signal code is empty: define check_signal(symbol, ticker, klines)")
    if len(code) > MAX_SOURCE_CHARS:
        raise SignalCodeError(f"signal code is longer than {MAX_SOURCE_CHARS} characters")
    try:
        tree = ast.parse(code, FILENAME, "exec")
        _strip_annotations(tree)
        _Habits().visit(tree)
        _CatchAll().visit(tree)
        _Policy().check(tree)
        errors: list[str] = []
        RestrictingNodeTransformer(errors, [], {}).visit(tree)
        if errors:
            raise _restricted_python_error(errors[0])
        _rewrite_raises_and_defaults(tree)
        tree = _ListMethodCalls().visit(tree)
        compiled = compile(ast.fix_missing_locations(tree), FILENAME, "exec")
    except SyntaxError as error:
        raise SignalCodeError(f"syntax error: {error.msg}", error.lineno) from None
    except (RecursionError, MemoryError):
        raise SignalCodeError("signal code is nested too deeply to compile") from None
    return SignalProgram(code, key or program_key(code), trader_id, version, code=compiled)


def program_key(code: str) -> str:
    """The source's identity under the current rules: the sha256 of the policy version and the source."""
    # Imported here: only the worker hashes, and OpenSSL's hashlib costs a sandbox process 3.5 MB of RSS.
    import hashlib  # noqa: PLC0415

    return hashlib.sha256(f"{POLICY_VERSION}\0{code}".encode()).hexdigest()


class ProgramCache:
    """Compiles each (trader, code version) once and remembers the result, rejections included."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[int, SignalProgram | SignalCodeError]] = {}

    def get(self, trader_id: str, version: int, code: str) -> SignalProgram:
        """The trader's compiled program for `version` (compiled on first use; older versions dropped).

        Raises:
            SignalCodeError: the code of this version was rejected (the same error every time).
        """
        entry = self._entries.get(trader_id)
        if entry is None or entry[0] != version:
            try:
                result: SignalProgram | SignalCodeError = compile_signal(
                    code, trader_id=trader_id, version=version
                )
            except SignalCodeError as error:
                result = error
            entry = (version, result)
            self._entries[trader_id] = entry
        if isinstance(entry[1], SignalCodeError):
            raise entry[1]
        return entry[1]

    def forget(self, trader_id: str) -> None:
        """Drop a removed trader's program."""
        self._entries.pop(trader_id, None)

    def __len__(self) -> int:
        return len(self._entries)


def _restricted_python_error(message: str) -> SignalCodeError:
    # RestrictedPython reports 'Line 3: "_x" is an invalid variable name ...'.
    head, _, rest = message.partition(": ")
    if head.startswith("Line ") and head[5:].isdigit():
        return SignalCodeError(rest, int(head[5:]))
    return SignalCodeError(message)


def _strip_annotations(tree: ast.Module) -> None:
    """Drop type annotations: they are evaluated at definition time and would need names like `dict`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            node.returns = None
            arguments = node.args
            for argument in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs):
                argument.annotation = None
            for maybe in (arguments.vararg, arguments.kwarg):
                if maybe is not None:
                    maybe.annotation = None
        for name, value in ast.iter_fields(node):
            if isinstance(value, list) and any(isinstance(item, ast.AnnAssign) for item in value):
                setattr(node, name, [_without_annotation(item) for item in value])


def _without_annotation(statement: ast.AST) -> ast.AST:
    if not isinstance(statement, ast.AnnAssign):
        return statement
    replacement: ast.stmt = (
        ast.Assign(targets=[statement.target], value=statement.value)
        if statement.value is not None
        else ast.Pass()
    )
    return ast.copy_location(replacement, statement)


class _Habits(ast.NodeTransformer):
    """Drop what a model writes out of habit and what changes nothing here: the imports of `math`, `typing`
    and `__future__` (`from math import sqrt` becomes `sqrt = math.sqrt`) and an `if __name__ ==
    "__main__":` block. Every other import stays, for the policy to refuse."""

    def visit_Module(self, node: ast.Module) -> ast.AST:
        node.body = [statement for statement in node.body if not _is_main_block(statement)]
        self.generic_visit(node)
        return node

    def visit_Import(self, node: ast.Import) -> ast.AST:
        if all(alias.name in IGNORED_IMPORTS and alias.asname in (None, alias.name) for alias in node.names):
            return ast.copy_location(ast.Pass(), node)
        return node

    def visit_ImportFrom(self, node: ast.ImportFrom) -> ast.AST | list[ast.stmt]:
        if node.level or node.module not in IGNORED_IMPORTS:
            return node
        if node.module != "math":
            return ast.copy_location(ast.Pass(), node)
        assignments: list[ast.stmt] = []
        for alias in node.names:
            if alias.name not in MATH_NAMES:
                raise SignalCodeError(
                    f"math has no {alias.name!r}: use math.<name> from the math module", node.lineno
                )
            value = ast.Attribute(value=ast.Name(id="math", ctx=ast.Load()), attr=alias.name, ctx=ast.Load())
            target = ast.Name(id=alias.asname or alias.name, ctx=ast.Store())
            assignments.append(ast.copy_location(ast.Assign(targets=[target], value=value), node))
        return [ast.fix_missing_locations(statement) for statement in assignments]


def _is_main_block(statement: ast.stmt) -> bool:
    match statement:
        case ast.If(
            test=ast.Compare(left=ast.Name(id="__name__"), comparators=[ast.Constant(value="__main__")])
        ):
            return True
        case _:
            return False


class _CatchAll(ast.NodeTransformer):
    """`except Exception` means the catchable exceptions only (never the deadline, memory or recursion)."""

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.type, ast.Name) and node.type.id == "Exception":
            names: list[ast.expr] = [ast.Name(id=name, ctx=ast.Load()) for name in CATCH_ALL]
            node.type = ast.copy_location(ast.Tuple(elts=names, ctx=ast.Load()), node.type)
            ast.fix_missing_locations(node)
        return node


def _rewrite_raises_and_defaults(tree: ast.Module) -> None:
    """After RestrictedPython: `raise ValueError(...)` raises the sandbox's decline exception, and every
    non-constant parameter default is frozen when the function is defined (names signal code cannot write
    itself, so only these rewrites reach them)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            match node.exc:
                case ast.Name(id=name) as named if name == DECLINE_EXCEPTION:
                    named.id = DECLINED_NAME
                case ast.Call(func=ast.Name(id=name) as named) if name == DECLINE_EXCEPTION:
                    named.id = DECLINED_NAME
                case ast.Call(func=ast.Name(id="_apply_"), args=[ast.Name(id=name) as named, *_]) if (
                    name == DECLINE_EXCEPTION
                ):
                    named.id = DECLINED_NAME
                case _:
                    pass
        elif isinstance(node, ast.FunctionDef | ast.Lambda):
            arguments = node.args
            arguments.defaults = [_frozen(default) for default in arguments.defaults]
            arguments.kw_defaults = [None if d is None else _frozen(d) for d in arguments.kw_defaults]


class _ListMethodCalls(ast.NodeTransformer):
    """After RestrictedPython: `out.append(x)` on a variable is `list.append(out, x)` when `out` holds a
    list, and the guarded call otherwise. The guard is a Python call per method call (about 100 ns, 40% of
    a pure-Python EMA loop); the check that replaces it is the one the guard makes (the exact type is
    list, the method one of list's allowed ones), and anything else takes the guard, with its errors. Only
    a plain variable is rewritten: it is read twice, which must not run anything."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        match node.func:
            case ast.Call(
                func=ast.Name(id="_getattr_"), args=[ast.Name(id=variable), ast.Constant(value=str(method))]
            ) if method in LIST_METHODS:
                pass
            case _:
                return node
        is_list = ast.Compare(
            left=ast.Call(func=_load(TYPE_NAME), args=[_load(variable)], keywords=[]),
            ops=[ast.Is()],
            comparators=[_load(LIST_NAME)],
        )
        direct = ast.Call(
            func=_load(list_method_name(method)), args=[_load(variable), *node.args], keywords=node.keywords
        )
        return ast.copy_location(ast.IfExp(test=is_list, body=direct, orelse=node), node)


def _load(name: str) -> ast.Name:
    return ast.Name(id=name, ctx=ast.Load())


def _frozen(default: ast.expr) -> ast.expr:
    if isinstance(default, ast.Constant):
        return default
    call = ast.Call(func=ast.Name(id=FREEZE_NAME, ctx=ast.Load()), args=[default], keywords=[])
    return ast.copy_location(call, default)


class _Policy:
    """Our checks on the parsed code; the first violation is raised as a SignalCodeError."""

    def check(self, tree: ast.Module) -> None:
        bound = _bound_names(tree)
        for node in ast.walk(tree):
            self._check_node(node, bound)
        self._check_module_level(tree)

    def _check_node(self, node: ast.AST, bound: set[str]) -> None:  # noqa: PLR0912 (a case per node kind)
        line = getattr(node, "lineno", None)
        kind = type(node)
        if kind in _REFUSED_NODES:
            raise SignalCodeError(_REFUSED_NODES[kind], line)
        if kind not in _ALLOWED_NODES:
            raise SignalCodeError(f"{kind.__name__} is not allowed in signal code", line)
        match node:
            case ast.Name(id=name):
                self._check_name(name, line)
                if isinstance(node.ctx, ast.Load) and name not in bound and name not in AVAILABLE_NAMES:
                    hint = _NAME_HINTS.get(name, f"signal code can use {_SHOWN_NAMES}, and what it defines")
                    raise SignalCodeError(f"name {name!r} is not available: {hint}", line)
            case ast.Attribute(attr=attribute):
                if attribute.startswith("_"):
                    raise SignalCodeError(
                        f"attributes starting with '_' are not allowed ({attribute}): use the public "
                        "attributes (k.close, k.high ...) and the helpers",
                        line,
                    )
                if attribute in _FORBIDDEN_ATTRIBUTES:
                    raise SignalCodeError(
                        f"the attribute {attribute!r} is not allowed: {_FORBIDDEN_ATTRIBUTES[attribute]}",
                        line,
                    )
            case ast.FunctionDef(name=name, decorator_list=decorators):
                self._check_name(name, line)
                if decorators:
                    raise SignalCodeError(
                        "decorators are not allowed: call the function directly", decorators[0].lineno
                    )
            case ast.arg(arg=name):
                self._check_name(name, line)
            case ast.keyword(arg=str(name)):
                self._check_name(name, line)
            case ast.Constant(value=str(text) | bytes(text)) if "__" in str(text):
                raise SignalCodeError(
                    "strings may not contain '__': rename the key or shorten the text", line
                )
            case ast.Constant(value=bytes()):
                raise SignalCodeError("bytes literals are not allowed: use a str", line)
            case ast.comprehension(is_async=1):
                raise SignalCodeError(_ASYNC, line)
            case ast.Try(finalbody=[first, *_]):
                raise SignalCodeError(
                    "finally is not allowed: put that code after the try statement", first.lineno
                )
            case ast.ExceptHandler(type=caught):
                _check_caught(caught, line)
                if node.name is not None:
                    self._check_name(node.name, line)
            case ast.Raise(exc=exc, cause=cause):
                if cause is not None:
                    raise SignalCodeError(f"raise ... from is not allowed: {_RAISE_HINT}", line)
                if exc is not None and not _is_decline(exc):
                    raise SignalCodeError(_RAISE_HINT, line)
            case _:
                pass

    @staticmethod
    def _check_name(name: str, line: int | None) -> None:
        if name.startswith("_") and name != "_":
            raise SignalCodeError(
                f"names starting with '_' are not allowed ({name}): rename it without the underscore "
                "(a lone _ is fine as a throwaway variable)",
                line,
            )
        if name in _FORBIDDEN_NAMES:
            raise SignalCodeError(f"{name} is not available: {_FORBIDDEN_NAMES[name]}", line)

    @staticmethod
    def _check_module_level(tree: ast.Module) -> None:  # noqa: PLR0912 (a case per statement kind)
        constants: set[str] = set()
        entry_points = []
        for statement in tree.body:
            line = statement.lineno
            match statement:
                case ast.FunctionDef(name=name, args=arguments):
                    _check_module_defaults(arguments, constants)
                    if name == ENTRY_POINT:
                        entry_points.append(statement)
                    constants.discard(name)
                case ast.Assign(targets=[ast.Name(id=name)], value=ast.Lambda(args=arguments)):
                    _check_module_defaults(arguments, constants)
                    if name == ENTRY_POINT:
                        raise SignalCodeError(f"{ENTRY_POINT} must be a def, not a lambda", line)
                    constants.discard(name)
                case ast.Assign(targets=targets, value=value):
                    names = [name for target in targets for name in _target_names(target, line)]
                    if not _is_constant_expression(value, constants, allow_containers=True):
                        raise SignalCodeError(
                            "module-level assignments must be constants (numbers, strings, tuples, lists "
                            "or dicts of them, and arithmetic on them): compute other values inside a "
                            "function",
                            line,
                        )
                    if ENTRY_POINT in names:
                        raise SignalCodeError(f"{ENTRY_POINT} must be a function", line)
                    constants.update(names)
                case ast.Expr(value=ast.Constant(value=str())) | ast.Pass():
                    pass  # a docstring
                case _:
                    raise SignalCodeError(
                        "only function definitions and constants are allowed at module level "
                        f"(found {_describe(statement)}); put the logic inside check_signal",
                        line,
                    )
        if not entry_points:
            raise SignalCodeError(f"define {ENTRY_POINT}({', '.join(ENTRY_PARAMETERS)}) at module level")
        if len(entry_points) > 1:
            raise SignalCodeError(
                f"{ENTRY_POINT} is defined more than once: keep one definition", entry_points[1].lineno
            )
        arguments = entry_points[0].args
        positional = [*arguments.posonlyargs, *arguments.args]
        if (
            len(positional) != len(ENTRY_PARAMETERS)
            or arguments.vararg
            or arguments.kwarg
            or arguments.kwonlyargs
            or arguments.defaults
        ):
            raise SignalCodeError(
                f"{ENTRY_POINT} must take exactly three parameters: ({', '.join(ENTRY_PARAMETERS)})",
                entry_points[0].lineno,
            )


def _check_module_defaults(arguments: ast.arguments, constants: set[str]) -> None:
    # They are evaluated while the module loads, where only constants may be computed. (All defaults are
    # frozen when the function is defined, so none carries state from one check to the next.)
    for default in (*arguments.defaults, *(d for d in arguments.kw_defaults if d is not None)):
        if not _is_constant_expression(default, constants, allow_containers=True):
            raise SignalCodeError(
                "defaults of module-level functions must be constants (numbers, strings, None, module "
                "constants, or tuples, lists or dicts of them): compute other values inside the function",
                default.lineno,
            )


def _check_caught(caught: ast.expr | None, line: int | None) -> None:
    names = caught.elts if isinstance(caught, ast.Tuple) else [caught]
    for name in names:
        if name is None:
            raise SignalCodeError(f"a bare except: is not allowed: {_CATCH_HINT}", line)
        if not isinstance(name, ast.Name) or name.id not in CATCHABLE_EXCEPTIONS:
            shown = name.id if isinstance(name, ast.Name) else ast.unparse(name)
            raise SignalCodeError(f"except {shown} is not allowed: {_CATCH_HINT}", line)


def _is_decline(exc: ast.expr) -> bool:
    match exc:
        case ast.Name(id=name) | ast.Call(func=ast.Name(id=name)):
            return name == DECLINE_EXCEPTION
        case _:
            return False


def _is_constant_expression(  # noqa: PLR0911 (a case per node kind)
    node: ast.expr, constants: set[str], *, allow_containers: bool
) -> bool:
    def ok(child: ast.expr) -> bool:
        return _is_constant_expression(child, constants, allow_containers=allow_containers)

    match node:
        case ast.Constant():
            return True
        case ast.Tuple(elts=items):
            return all(ok(item) for item in items)
        case ast.List(elts=items) | ast.Set(elts=items) if allow_containers:
            return all(ok(item) for item in items)
        case ast.Dict(keys=keys, values=values) if allow_containers:
            return all(key is not None and ok(key) for key in keys) and all(ok(v) for v in values)
        case ast.UnaryOp(operand=operand):
            return ok(operand)
        case ast.BinOp(left=left, right=right):
            return ok(left) and ok(right)
        case ast.BoolOp(values=values):
            return all(ok(value) for value in values)
        case ast.Name(id=name):
            return name in constants
        case ast.Attribute(value=ast.Name(id="math")):
            return True
        case _:
            return False


def _target_names(target: ast.expr, line: int) -> Iterable[str]:
    match target:
        case ast.Name(id=name):
            return [name]
        case ast.Tuple(elts=items) | ast.List(elts=items):
            return [name for item in items for name in _target_names(item, line)]
        case _:
            raise SignalCodeError("module-level assignments must assign to plain names", line)


def _bound_names(tree: ast.Module) -> set[str]:
    """Every name the code itself binds anywhere (a flat approximation of scopes, enough to spot typos
    and names from elsewhere such as `np`; the run-time namespace is what actually limits access)."""
    bound: set[str] = set()
    for node in ast.walk(tree):
        match node:
            case ast.Name(id=name, ctx=ast.Store()):
                bound.add(name)
            case ast.FunctionDef(name=name):
                bound.add(name)
            case ast.arg(arg=name) | ast.ExceptHandler(name=str(name)):
                bound.add(name)
            case _:
                pass
    return bound


def _describe(statement: ast.stmt) -> str:
    names = {
        ast.For: "a for loop", ast.While: "a while loop", ast.If: "an if statement",
        ast.Expr: "an expression", ast.AugAssign: "an augmented assignment", ast.Assert: "an assert",
        ast.Return: "a return", ast.Try: "a try statement",
    }  # fmt: skip
    return names.get(type(statement), type(statement).__name__)
