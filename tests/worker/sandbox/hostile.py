"""Hostile signal code, written as an attacker who has read RestrictedPython's source would, with the
outcome the sandbox must produce for each.

REJECTED: refused by compile_signal (with a line number). STOPPED: accepted, but the program is stopped
while it runs (its sandbox process is killed and replaced, the trader reported). FAILS: the attack
raises inside check_signal and becomes a per-symbol error; nothing escapes and the process lives on.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    REJECTED = "rejected"
    STOPPED = "stopped"
    FAILS = "fails"


@dataclass(frozen=True)
class Snippet:
    name: str
    outcome: Outcome
    code: str
    # For REJECTED: the line the error must name; for STOPPED / FAILS: a regex the reason must match.
    line: int | None = None
    reason: str = ""


def body(*lines: str) -> str:
    """`lines` as the body of check_signal (the signature is line 1)."""
    return "def check_signal(symbol, ticker, klines):\n" + "".join(f"    {line}\n" for line in lines)


R, S, F = Outcome.REJECTED, Outcome.STOPPED, Outcome.FAILS

SNIPPETS = [
    # Imports, in every form.
    Snippet("import", R, "import os\n" + body("return False"), line=1),
    Snippet("from import", R, "from os import system\n" + body("return False"), line=1),
    Snippet("import inside the function", R, body("import subprocess", "return False"), line=2),
    Snippet("import as", R, body("x = 1", "import socket as s", "return False"), line=3),
    Snippet("dunder import call", R, body("os = __import__('os')", "return False"), line=2),
    Snippet("builtins dict", R, body("b = __builtins__", "return False"), line=2),
    Snippet("loader", R, body("m = __loader__.load_module('os')", "return False"), line=2),
    Snippet("importlib by name", R, body("return importlib.import_module('os') is None"), line=2),
    # Class hierarchy walks.
    Snippet("mro walk", R, body("x = ().__class__.__mro__[1].__subclasses__()", "return False"), line=2),
    Snippet("base subclasses", R, body("x = ''.__class__.__base__", "return False"), line=2),
    Snippet("mro without underscores", R, body("x = enumerate[int].mro()", "return False"), line=2),
    Snippet("generic alias at run time", F, body("x = enumerate[int]", "return False"), reason="subscripted"),
    Snippet("type()", R, body("t = type(klines)", "return False"), line=2),
    Snippet("object", R, body("return len(object.__subclasses__()) > 0"), line=2),
    Snippet("class with dunder methods", R, "class X:\n    pass\n" + body("return False"), line=1),
    # Function and module globals.
    Snippet("function globals", R, body("g = check_signal.__globals__", "return False"), line=2),
    Snippet("helper globals", R, body("g = get_closes.__globals__['np']", "return False"), line=2),
    Snippet("lambda code", R, body("c = (lambda: 0).__code__", "return False"), line=2),
    Snippet("math internals", R, body("d = math.__dict__", "return False"), line=2),
    Snippet("math has no os", F, body("return math.sys is None"), reason="attribute 'sys'"),
    Snippet("globals()", R, body("return len(globals()) > 0"), line=2),
    Snippet("vars()", R, body("return len(vars(klines)) > 0"), line=2),
    # Frames through generators and tracebacks.
    Snippet(
        "generator frame", R, body("g = (x for x in [1])", "f = g.gi_frame.f_globals", "return False"), line=3
    ),
    Snippet(
        "generator method at run time",
        F,
        body("g = (x for x in [1])", "return g.send(None) == 1"),
        reason="attribute 'send'",
    ),
    Snippet("generator function", R, "def gen():\n    yield 1\n" + body("return False"), line=2),
    Snippet(
        "traceback frame",
        R,
        body(
            "try:", "    1 / 0", "except Exception as e:", "    f = e.__traceback__.tb_frame", "return False"
        ),
        line=2,
    ),
    Snippet("raise to unwind", R, body("raise SystemExit(0)"), line=2),
    # Format strings.
    Snippet("format attribute", R, body("s = '{0.__class__}'.format(klines)", "return False"), line=2),
    Snippet("format without dunder", R, body("s = '{0.real}'.format(1)", "return False"), line=2),
    Snippet("format_map", R, body("s = '{x}'.format_map(ticker)", "return False"), line=2),
    Snippet("f-string", R, body("s = f'{klines!r}'", "return False"), line=2),
    # Computed names.
    Snippet("getattr", R, body("c = getattr(klines, '__cla' + 'ss__')", "return False"), line=2),
    Snippet("setattr", R, body("setattr(klines, 'x', 1)", "return False"), line=2),
    Snippet("eval", R, body("return eval('1') == 1"), line=2),
    Snippet("exec", R, body("exec('x = 1')", "return False"), line=2),
    Snippet("compile", R, body("c = compile('1', 'f', 'eval')", "return False"), line=2),
    # Files, processes, sockets.
    Snippet("open a file", R, body("return len(open('/etc/passwd').read()) > 0"), line=2),
    Snippet("fork", R, body("pid = os.fork()", "return False"), line=2),
    Snippet("socket", R, body("s = socket.socket()", "return False"), line=2),
    Snippet(
        "numpy writes a file", R, body("klines['1h'].close.tofile('/tmp/pwned')", "return False"), line=2
    ),
    Snippet(
        "numpy pickles to a file", R, body("klines['1h'].close.dump('/tmp/pwned')", "return False"), line=2
    ),
    Snippet("numpy ctypes", R, body("p = klines['1h'].close.ctypes", "return False"), line=2),
    Snippet("numpy base buffer", R, body("b = klines['1h'].close.base", "return False"), line=2),
    Snippet(
        "numpy unlisted method",
        F,
        body("return len(klines['1h'].close.repeat(2)) > 0"),
        reason="no attribute 'repeat'",
    ),
    Snippet("exit", R, body("exit(0)"), line=2),
    # Changing what we hand in.
    Snippet(
        "write shared klines",
        F,
        body("klines['1h'].close[0] = 0.0", "return False"),
        reason="cannot be changed",
    ),
    Snippet(
        "unlock shared klines", R, body("klines['1h'].close.setflags(write=True)", "return False"), line=2
    ),
    Snippet(
        "in-place on shared klines",
        F,
        body("c = klines['1h'].close", "c += 1.0", "return False"),
        reason="read-only",
    ),
    Snippet(
        "replace a timeframe", F, body("klines['1h'] = None", "return False"), reason="cannot be changed"
    ),
    Snippet(
        "write the ticker", F, body("ticker['lastPrice'] = 0", "return False"), reason="cannot be changed"
    ),
    Snippet("hand back an object", F, body("return klines"), reason="expected True or False"),
    # State that outlives a check.
    Snippet("global", R, "SEEN = 0\n" + body("global SEEN", "return False"), line=3),
    Snippet(
        "mutable default", R, "def remember(x, seen=[]):\n    return seen\n" + body("return False"), line=1
    ),
    Snippet("module-level code", R, "for i in range(3):\n    pass\n" + body("return False"), line=1),
    Snippet("module-level call", R, "X = get_closes(None)\n" + body("return False"), line=1),
    Snippet(
        "frozen module constant",
        F,
        "LEVELS = [1, 2]\n" + body("LEVELS.append(3)", "return False"),
        reason="attribute 'append'",
    ),
    # Exhausting the machine.
    Snippet("while True", S, body("while True:", "    pass"), reason="deadline"),
    Snippet("generator spin", S, body("return all(i >= 0 for i in range(10 ** 12))"), reason="deadline"),
    Snippet("C-level loop", S, body("return sum(range(10 ** 15)) > 0"), reason="did not stop"),
    Snippet("huge power", S, body("return 10 ** 10 ** 9 > 0"), reason="deadline|did not stop|memory"),
    Snippet("huge list", S, body("x = [0] * (10 ** 10)", "return False"), reason="memory"),
    Snippet("huge string", S, body("x = 'a' * (2 ** 40)", "return False"), reason="memory"),
    Snippet(
        "growing lists",
        S,
        body("rows = []", "while True:", "    rows.append([0.0] * 100000)"),
        reason="memory|deadline",
    ),
    Snippet(
        "deep recursion",
        S,
        "def down(n):\n    return down(n + 1)\n" + body("return down(0) > 0"),
        reason="recursed",
    ),
    Snippet(
        "recursion through a builtin",
        S,
        "def key(x):\n    return sorted([1, 2], key=key)\n" + body("return key(0) is None"),
        reason="recursed",
    ),
    Snippet(
        "slow module constant",
        S,
        "X = 10 ** 10 ** 9\n" + body("return False"),
        reason="deadline|did not stop|memory",
    ),
    # Shape of the program.
    Snippet("no check_signal", R, "def check(symbol, ticker, klines):\n    return False\n"),
    Snippet("wrong arity", R, "def check_signal(symbol, klines):\n    return False\n", line=1),
    Snippet("async", R, "async def check_signal(symbol, ticker, klines):\n    return False\n", line=1),
    Snippet("decorator", R, "def wrap(f):\n    return f\n@wrap\n" + body("return False"), line=3),
    Snippet("print", R, body("print(symbol)", "return False"), line=2),
    Snippet("underscore name", R, body("_ = 1", "return False"), line=2),
    Snippet("bytes", R, body("x = b'\\x00'", "return False"), line=2),
]
