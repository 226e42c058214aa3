"""Hostile signal code, written as an attacker who has read RestrictedPython's source would, with the
outcome the sandbox must produce for each.

REJECTED: refused by compile_signal (with a line number). STOPPED: accepted, but the program is stopped
while it runs (its sandbox process is killed and replaced, the trader reported). FAILS: the attack
raises inside check_signal and becomes a per-symbol error; nothing escapes and the process lives on.
CONTAINED: the code runs without error and returns True only if the attack worked, so every check must
come back False (declined with a reason, where `reason` is given).

Every name the dialect added in policy version 2 (the builtins list reversed tuple dict set str map filter
isinstance pow divmod, `_`, try/except, raise ValueError, f-strings, frozen defaults, habitual imports, the
numpy methods that import lazily) has attacks aimed at it below.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    REJECTED = "rejected"
    STOPPED = "stopped"
    FAILS = "fails"
    CONTAINED = "contained"


@dataclass(frozen=True)
class Snippet:
    name: str
    outcome: Outcome
    code: str
    # For REJECTED: the line the error must name; for STOPPED / FAILS / CONTAINED: a regex the reason
    # (CONTAINED: the declined reason) must match.
    line: int | None = None
    reason: str = ""


def body(*lines: str) -> str:
    """`lines` as the body of check_signal (the signature is line 1)."""
    return "def check_signal(symbol, ticker, klines):\n" + "".join(f"    {line}\n" for line in lines)


R, S, F, C = Outcome.REJECTED, Outcome.STOPPED, Outcome.FAILS, Outcome.CONTAINED

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
        line=5,
    ),
    Snippet("raise to unwind", R, body("raise SystemExit(0)"), line=2),
    # Format strings.
    Snippet("format attribute", R, body("s = '{0.__class__}'.format(klines)", "return False"), line=2),
    Snippet("format without dunder", R, body("s = '{0.real}'.format(1)", "return False"), line=2),
    Snippet("format_map", R, body("s = '{x}'.format_map(ticker)", "return False"), line=2),
    Snippet("f-string dunder", R, body("s = f'{klines.__class__}'", "return False"), line=2),
    Snippet("f-string format call", R, body("s = f\"{'{0.real}'.format(1)}\"", "return False"), line=2),
    Snippet(
        "f-string nested spec",
        F,
        body("spec = '0.' + '_' * 2 + 'class' + '_' * 2", "return f'{1:{spec}}' == ''"),
        reason="ValueError: .*[Ff]ormat specifier",
    ),
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
        "mutable list default is frozen",
        F,
        "def remember(x, seen=[]):\n    seen.append(x)\n    return len(seen) > 1\n"
        + body("return remember(symbol)"),
        reason="no attribute 'append'",
    ),
    Snippet(
        "mutable dict default is frozen",
        F,
        "def remember(x, seen={}):\n    seen[x] = 1\n    return len(seen) > 1\n"
        + body("return remember(symbol)"),
        reason="cannot be changed",
    ),
    Snippet(
        "default from a module constant is frozen",
        F,
        "SEEN = []\ndef remember(x, seen=SEEN):\n    seen.append(x)\n    return True\n"
        + body("return remember(symbol)"),
        reason="no attribute 'append'",
    ),
    Snippet(
        "module-level default calls a function",
        R,
        "def remember(x, seen=get_closes(None)):\n    return seen\n" + body("return False"),
        line=1,
    ),
    Snippet(
        "nested default keeps nothing between checks",
        C,
        body(
            "def bump(n, box=[]):",
            "    return len(box) + n",
            "counts = [bump(i) for i in range(3)]",
            "return counts != [0, 1, 2]",
        ),
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
    Snippet("underscore name", R, body("_x = 1", "return False"), line=2),
    # The throwaway `_` and the names next to it.
    Snippet("guard name", R, body("g = _getattr_", "return False"), line=2),
    Snippet("replace a guard", R, body("_getattr_ = None", "return False"), line=2),
    Snippet("decline name", R, body("raise _declined_('x')"), line=2),
    Snippet("freeze name", R, body("f = _freeze_", "return False"), line=2),
    Snippet("double underscore", R, body("__ = 1", "return False"), line=2),
    Snippet("underscore attribute", R, body("_ = klines", "return _._data is None"), line=3),
    Snippet(
        "throwaway holds nothing special",
        C,
        body("for _ in range(3):", "    pass", "_ = klines['1h']", "return _ is not klines['1h']"),
    ),
    # The new builtins.
    Snippet(
        "list type attribute", F, body("f = list.append", "return False"), reason="no attribute 'append'"
    ),
    Snippet("dict fromkeys", F, body("d = dict.fromkeys('ab')", "return False"), reason="no attribute"),
    Snippet("str type format", R, body("s = str.format('{0.__class__}', 1)", "return False"), line=2),
    Snippet("str join through the type", F, body("return str.join('', ['a']) == 'a'"), reason="no attribute"),
    Snippet("str of a huge int", F, body("return str(10 ** 5000) == ''"), reason="ValueError"),
    Snippet(
        "dict copy of klines changes nothing shared",
        C,
        body(
            "d = dict(klines)",
            "d['1h'] = None",
            "return klines['1h'] is None",
        ),
    ),
    Snippet(
        "list of a shared array is a copy",
        C,
        body("c = list(klines['1h'].close)", "c[0] = -1.0", "return klines['1h'].close[0] == -1.0"),
    ),
    Snippet(
        "tuple and set of klines hold no internals",
        F,
        body("t = tuple(klines)", "s = set(t)", "return s.pop().upper().encode is None"),
        reason="no attribute 'encode'",
    ),
    Snippet(
        "map to a forbidden builtin", R, body("return list(map(getattr, [klines], ['x'])) == []"), line=2
    ),
    Snippet(
        "map spins in C",
        S,
        body("return all(map(bool, range(1, 10 ** 15))) and False"),
        reason="did not stop|deadline",
    ),
    Snippet(
        "filter spins",
        S,
        body("return any(filter(lambda x: x < 0, range(10 ** 15)))"),
        reason="deadline",
    ),
    Snippet(
        "map object attributes",
        F,
        body("m = map(abs, [1])", "return m.close is None"),
        reason="no attribute 'close'",
    ),
    Snippet("isinstance of type", R, body("return isinstance(klines, type)"), line=2),
    Snippet(
        "isinstance probes nothing",
        C,
        body("return isinstance(klines['1h'], (list, tuple, dict, set, str)) or isinstance(ticker, list)"),
    ),
    Snippet("pow with a modulus stays cheap", C, body("return pow(2, 10 ** 18, 7) != 2")),
    Snippet("divmod by zero", F, body("return divmod(1, 0)[0] > 0"), reason="ZeroDivisionError"),
    Snippet(
        "reversed huge range materialised",
        S,
        body("return len(list(reversed(range(10 ** 10)))) > 0"),
        reason="memory|deadline|did not stop",
    ),
    # try / except and raise.
    Snippet("bare except", R, body("try:", "    pass", "except:", "    pass", "return False"), line=4),
    Snippet(
        "catch BaseException",
        R,
        body("try:", "    pass", "except BaseException:", "    pass", "return False"),
        line=4,
    ),
    Snippet(
        "catch the deadline by type",
        R,
        body("try:", "    pass", "except (ValueError, KeyboardInterrupt):", "    pass", "return False"),
        line=4,
    ),
    Snippet(
        "catch MemoryError",
        R,
        body("try:", "    pass", "except MemoryError:", "    pass", "return False"),
        line=4,
    ),
    Snippet(
        "catch a computed type",
        R,
        body("try:", "    pass", "except get_closes(klines):", "    pass", "return False"),
        line=4,
    ),
    Snippet(
        "except star", R, body("try:", "    pass", "except* ValueError:", "    pass", "return False"), line=2
    ),
    Snippet(
        "finally outlives the deadline",
        R,
        body("try:", "    while True:", "        pass", "finally:", "    while True:", "        pass"),
        line=6,
    ),
    Snippet(
        "except Exception cannot catch the deadline",
        S,
        body(
            "while True:",
            "    try:",
            "        while True:",
            "            pass",
            "    except Exception:",
            "        pass",
        ),
        reason="deadline",
    ),
    Snippet(
        "except Exception cannot catch memory",
        S,
        body("try:", "    x = [0] * (10 ** 10)", "except Exception:", "    return True", "return True"),
        reason="memory",
    ),
    Snippet(
        "except Exception cannot catch recursion",
        S,
        "def down(n):\n    return down(n + 1)\n"
        + body("try:", "    return down(0) > 0", "except Exception:", "    return True"),
        reason="recursed",
    ),
    Snippet(
        "caught guard refusal is not swallowed",
        F,
        body("try:", "    return ticker.fromkeys is None", "except Exception:", "    return True"),
        reason="no attribute .fromkeys.",
    ),
    Snippet(
        "caught exception has no attributes",
        F,
        body("try:", "    1 / 0", "except ZeroDivisionError as e:", "    return e.args is None"),
        reason="no attribute 'args'",
    ),
    Snippet(
        "caught exception traceback method",
        R,
        body(
            "try:", "    1 / 0", "except ZeroDivisionError as e:", "    return e.with_traceback(None) is None"
        ),
        line=5,
    ),
    Snippet(
        "rebound exception name",
        F,
        body("ZeroDivisionError = 0", "try:", "    1 / 0", "except ZeroDivisionError:", "    return True"),
        reason="TypeError|ZeroDivisionError",
    ),
    Snippet("raise SystemExit by name", R, body("raise SystemExit"), line=2),
    Snippet("raise KeyboardInterrupt", R, body("raise KeyboardInterrupt()"), line=2),
    Snippet("raise from", R, body("raise ValueError('x') from None"), line=2),
    Snippet("raise another exception", R, body("raise KeyError('x')"), line=2),
    Snippet(
        "raise a value error declines",
        C,
        body("raise ValueError('not enough candles')"),
        reason="^not enough candles$",
    ),
    Snippet(
        "raised message is one short line",
        C,
        body("raise ValueError('line\\n' * 10000)"),
        reason="^line line .{0,500}$",
    ),
    Snippet(
        "declining cannot smuggle an object",
        C,
        body("raise ValueError(klines['1h'])"),
        reason="Klines",
    ),
    Snippet(
        "re-raise outside a handler",
        F,
        body("raise"),
        reason="RuntimeError",
    ),
    # Imports a model writes out of habit.
    Snippet("import math as os", R, body("import math as os", "return False"), line=2),
    Snippet("from math import a dunder", R, "from math import __loader__\n" + body("return False"), line=1),
    Snippet(
        "from math import what is not there", R, "from math import system\n" + body("return False"), line=1
    ),
    Snippet(
        "typing only for annotations", R, "import typing\n" + body("return typing.cast(bool, True)"), line=3
    ),
    Snippet("main block hides nothing", R, body("return __name__ == 'signal'"), line=2),
    # numpy's lazily imported modules.
    Snippet(
        "main block is dropped unrun",
        C,
        body("return False")
        + "if __name__ == '__main__':\n    import os\n    os.system('touch /tmp/pwned')\n",
    ),
    Snippet(
        "numpy methods import nothing new",
        C,
        body(
            "c = klines['1h'].close",
            "s = [c.max(), c.min(), c.mean(), c.std(), c.var(), c.sum(), c.prod(), c.any(), c.all()]",
            "s += [c.clip(0, 1)[0], c.argsort()[0], c.cumsum()[-1], c[-5:].round(2)[0]]",
            "return len(s) != 13",
        ),
    ),
    Snippet("bytes", R, body("x = b'\\x00'", "return False"), line=2),
]
