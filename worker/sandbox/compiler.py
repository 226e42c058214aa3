"""Compiling signal code: our own AST policy, then RestrictedPython's transformer, once per code version.

The policy is an allow-list of syntax (anything not listed is refused with the line and a hint), then
rules on names, attributes, module-level statements and the `check_signal` signature. RestrictedPython
then rewrites attribute, item, iteration and augmented-assignment operations into calls of the guards in
`worker.sandbox.guards`, which the sandbox process supplies at run time. Compiling never runs the code:
the worker compiles in its own process to report problems before the first run, and the sandbox process
compiles the same source again to get the code object it executes.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import CodeType

from RestrictedPython.transformer import RestrictingNodeTransformer

from worker.indicators.catalog import build_catalog
from worker.sandbox.errors import SignalCodeError

ENTRY_POINT = "check_signal"
ENTRY_PARAMETERS = ("symbol", "ticker", "klines")
FILENAME = "<signal>"
MAX_SOURCE_CHARS = 100_000  # the traders.signal_code check constraint
# Bumped whenever the rules change, so a cached program compiled under older rules is never reused.
POLICY_VERSION = 1

SAFE_BUILTIN_NAMES = (
    "abs", "min", "max", "len", "range", "sum", "round", "any", "all", "sorted", "enumerate", "zip",
    "float", "int", "bool",
)  # fmt: skip
HELPER_NAMES = tuple(entry["name"] for entry in build_catalog()["helpers"])
AVAILABLE_NAMES = frozenset({*SAFE_BUILTIN_NAMES, *HELPER_NAMES, "math", "True", "False", "None"})

# Builtins people reach for that are deliberately absent, with the reason they get.
_FORBIDDEN_NAMES = {
    name: "signal code has no access to the interpreter"
    for name in (
        "eval", "exec", "compile", "globals", "locals", "vars", "getattr", "setattr", "delattr", "hasattr",
        "type", "object", "super", "dir", "id", "help", "breakpoint", "classmethod", "staticmethod",
        "property", "memoryview", "exit", "quit", "isinstance", "issubclass", "callable",
    )
} | {name: "signal code has no I/O" for name in ("open", "input", "print")}  # fmt: skip

# Attributes without a leading underscore that still lead to interpreter internals, or to I/O through
# numpy. The run-time guard allows only listed attributes per type anyway; this gives an early message.
_FORBIDDEN_ATTRIBUTES = frozenset(
    {
        "format", "format_map", "mro", "gi_frame", "gi_code", "gi_yieldfrom", "gi_running", "cr_frame",
        "cr_code", "ag_frame", "ag_code", "f_globals", "f_locals", "f_builtins", "f_back", "f_code",
        "tb_frame", "tb_next", "co_code", "co_consts", "func_globals", "func_code", "tofile", "dump",
        "dumps", "setflags", "ctypes", "base", "data", "flags", "view", "astype", "obj", "with_traceback",
    }
)  # fmt: skip

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
        ast.Load, ast.Store, *_OPERATORS,
    }
)  # fmt: skip
_REFUSED_NODES: dict[type[ast.AST], str] = {
    ast.Import: "imports are not allowed: use the helpers, math and the builtins provided",
    ast.ImportFrom: "imports are not allowed: use the helpers, math and the builtins provided",
    ast.ClassDef: "classes are not allowed: define functions instead",
    ast.Global: "global is not allowed: pass values as arguments",
    ast.Nonlocal: "nonlocal is not allowed: pass values as arguments",
    ast.Try: "try/except is not allowed: check values first and return False when data is missing",
    ast.TryStar: "try/except is not allowed: check values first and return False when data is missing",
    ast.Raise: "raise is not allowed: return False instead",
    ast.With: "with statements are not allowed",
    ast.AsyncWith: "async code is not allowed",
    ast.AsyncFor: "async code is not allowed",
    ast.AsyncFunctionDef: "async code is not allowed",
    ast.Await: "async code is not allowed",
    ast.Yield: "generators (yield) are not allowed: build and return a list",
    ast.YieldFrom: "generators (yield) are not allowed: build and return a list",
    ast.JoinedStr: "f-strings are not allowed: signal code returns True or False, not text",
    ast.Delete: "del is not allowed",
    ast.Match: "match statements are not allowed: use if/elif",
    ast.MatMult: "the @ operator is not allowed",
}


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


def compile_signal(code: str, *, trader_id: str | None = None, version: int | None = None) -> SignalProgram:
    """Check and compile signal code defining `check_signal(symbol, ticker, klines) -> bool`.

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
        _Policy().check(tree)
        errors: list[str] = []
        RestrictingNodeTransformer(errors, [], {}).visit(tree)
        if errors:
            raise _restricted_python_error(errors[0])
        compiled = compile(tree, FILENAME, "exec")
    except SyntaxError as error:
        raise SignalCodeError(f"syntax error: {error.msg}", error.lineno) from None
    except (RecursionError, MemoryError):
        raise SignalCodeError("signal code is nested too deeply to compile") from None
    digest = hashlib.sha256(f"{POLICY_VERSION}\0{code}".encode()).hexdigest()
    return SignalProgram(code, digest, trader_id, version, code=compiled)


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
                    raise SignalCodeError(
                        f"name {name!r} is not available: signal code can use the helpers, math and "
                        f"the builtins {', '.join(SAFE_BUILTIN_NAMES)}",
                        line,
                    )
            case ast.Attribute(attr=attribute):
                if attribute.startswith("_"):
                    raise SignalCodeError(f"attributes starting with '_' are not allowed ({attribute})", line)
                if attribute in _FORBIDDEN_ATTRIBUTES:
                    raise SignalCodeError(f"the attribute {attribute!r} is not allowed", line)
            case ast.FunctionDef(name=name, decorator_list=decorators):
                self._check_name(name, line)
                if decorators:
                    raise SignalCodeError("decorators are not allowed", decorators[0].lineno)
                _check_defaults(node.args)
            case ast.Lambda():
                _check_defaults(node.args)
            case ast.arg(arg=name):
                self._check_name(name, line)
            case ast.keyword(arg=str(name)):
                self._check_name(name, line)
            case ast.Constant(value=str(text) | bytes(text)) if "__" in str(text):
                raise SignalCodeError("strings may not contain '__'", line)
            case ast.Constant(value=bytes()):
                raise SignalCodeError("bytes literals are not allowed", line)
            case ast.comprehension(is_async=1):
                raise SignalCodeError("async code is not allowed", line)
            case _:
                pass

    @staticmethod
    def _check_name(name: str, line: int | None) -> None:
        if name.startswith("_"):
            raise SignalCodeError(f"names starting with '_' are not allowed ({name})", line)
        if name in _FORBIDDEN_NAMES:
            raise SignalCodeError(f"{name} is not available: {_FORBIDDEN_NAMES[name]}", line)

    @staticmethod
    def _check_module_level(tree: ast.Module) -> None:
        constants: set[str] = set()
        entry_points = []
        for statement in tree.body:
            line = statement.lineno
            match statement:
                case ast.FunctionDef(name=name):
                    if name == ENTRY_POINT:
                        entry_points.append(statement)
                    constants.discard(name)
                case ast.Assign(targets=targets, value=value):
                    names = [name for target in targets for name in _target_names(target, line)]
                    if not _is_constant_expression(value, constants, allow_containers=True):
                        raise SignalCodeError(
                            "module-level assignments must be constants (numbers, strings, tuples, lists "
                            "or dicts of them, and arithmetic on them)",
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
            raise SignalCodeError(f"{ENTRY_POINT} is defined more than once", entry_points[1].lineno)
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


def _check_defaults(arguments: ast.arguments) -> None:
    # A mutable default would keep state from one check to the next (and across symbols).
    for default in (*arguments.defaults, *(d for d in arguments.kw_defaults if d is not None)):
        if not _is_constant_expression(default, set(), allow_containers=False):
            raise SignalCodeError(
                "parameter defaults must be numbers, strings, None or tuples of them", default.lineno
            )


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
            case ast.arg(arg=name):
                bound.add(name)
            case _:
                pass
    return bound


def _describe(statement: ast.stmt) -> str:
    names = {
        ast.For: "a for loop", ast.While: "a while loop", ast.If: "an if statement",
        ast.Expr: "an expression", ast.AugAssign: "an augmented assignment", ast.Assert: "an assert",
        ast.Return: "a return",
    }  # fmt: skip
    return names.get(type(statement), type(statement).__name__)
