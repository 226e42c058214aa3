"""compile_signal: the hostile corpus's compile-time rejections, what generated code may do, the cache."""

from __future__ import annotations

import pytest

from tests.worker.sandbox.hostile import SNIPPETS, Outcome, Snippet, body
from worker.indicators.catalog import build_catalog
from worker.sandbox import SignalCodeError, compile_signal
from worker.sandbox.compiler import HELPER_NAMES, MAX_SOURCE_CHARS, ProgramCache
from worker.sandbox.guards import guarded_getattr, program_globals

REJECTED = [snippet for snippet in SNIPPETS if snippet.outcome is Outcome.REJECTED]
ACCEPTED = [snippet for snippet in SNIPPETS if snippet.outcome is not Outcome.REJECTED]


def test_the_corpus_is_large_and_varied() -> None:
    assert len(SNIPPETS) >= 40
    assert len(REJECTED) >= 30 and len(ACCEPTED) >= 15
    assert len({snippet.name for snippet in SNIPPETS}) == len(SNIPPETS)


@pytest.mark.parametrize("snippet", REJECTED, ids=lambda snippet: snippet.name)
def test_hostile_code_is_rejected_with_its_line(snippet: Snippet) -> None:
    with pytest.raises(SignalCodeError) as caught:
        compile_signal(snippet.code, trader_id="t-1", version=1)

    assert caught.value.line == snippet.line, str(caught.value)
    assert caught.value.reason and str(caught.value).startswith(
        f"line {snippet.line}: " if snippet.line else caught.value.reason
    )


@pytest.mark.parametrize("snippet", ACCEPTED, ids=lambda snippet: snippet.name)
def test_run_time_attacks_compile(snippet: Snippet) -> None:
    # These pass the static checks on purpose: the run-time guards and limits must stop them.
    program = compile_signal(snippet.code)

    assert program.key and program.source == snippet.code


def test_generated_style_code_compiles() -> None:
    code = '''"""Oversold bounce with a trend filter."""
LOOKBACK: int = 20
LEVELS = (30, 70)
BANDS = {"width": 2.0, "period": LOOKBACK}
TAU = math.pi * 2


def average(values: list, period: int = 14) -> float:
    window = values[-period:]
    return sum(window) / len(window)


def check_signal(symbol: str, ticker: dict, klines: dict[str, Klines]) -> bool:
    """True when RSI is oversold above the 50 EMA."""
    k = klines["1h"]
    closes = get_closes(k)
    if len(closes) < 60:
        return False
    rsi: float = get_latest_rsi(k, 14)
    macd, signal, hist = get_latest_macd(k)
    upper, middle, lower = get_latest_bollinger_bands(k, BANDS["period"], BANDS["width"])
    changes = [b - a for a, b in zip(closes[-10:-1], closes[-9:])]
    ups = sum(1 for change in changes if change > 0)
    ordered = sorted(changes, key=lambda change: abs(change))
    total = 0.0
    for index, change in enumerate(changes):
        total += change * index
    last = closes[-1]
    price = ticker.get("lastPrice", last)
    ok = rsi < LEVELS[0] and last > get_latest_ema(k, 50) and not math.isnan(hist)
    return bool(ok and ups >= 3 and price > 0 and len(ordered) == 9 and average(closes) > 0)
'''
    program = compile_signal(code, trader_id="t-1", version=3)

    assert (program.trader_id, program.version) == ("t-1", 3)


def test_list_methods_on_a_list_variable_skip_the_guard_and_keep_its_refusals() -> None:
    code = (
        "def grow(out, values):\n"
        "    for value in values:\n"
        "        out.append(value * 2)\n"
        "    out.sort(reverse=True)\n"
        "    out.extend(values)\n"
        "    return out\n" + body("return False")
    )
    namespace = program_globals()
    guarded: list[str] = []

    def counting_getattr(obj: object, name: str) -> object:
        guarded.append(name)
        return guarded_getattr(obj, name)

    namespace["_getattr_"] = counting_getattr
    exec(compile_signal(code).code, namespace)  # noqa: S102 (the compiled test program)

    assert namespace["grow"]([], [1, 3, 2]) == [6, 4, 2, 1, 3, 2]
    assert guarded == []  # list's own methods, no guard call
    with pytest.raises(AttributeError, match="tuple has no attribute 'append' available to signal code"):
        namespace["grow"]((), [1])
    assert guarded == ["append"]  # anything but a list takes the guard, with its refusal


def test_helper_names_come_from_the_catalog() -> None:
    assert tuple(entry["name"] for entry in build_catalog()["helpers"]) == HELPER_NAMES
    assert "get_latest_rsi" in HELPER_NAMES and len(HELPER_NAMES) >= 25


@pytest.mark.parametrize(
    ("code", "line", "words"),
    [
        (body("return (", "1"), 2, "syntax error"),
        (body("x = np.mean(get_closes(klines['1h']))", "return x > 0"), 2, "name 'np' is not available"),
        (body("return hasattr(symbol, 'x')"), 2, "hasattr is not available: read attributes directly"),
        (body("x = np.mean(get_closes(klines['1h']))", "return x > 0"), 2, "use their methods"),
        (body("print(symbol)", "return False"), 2, "raise ValueError"),
        (body("return type(symbol) is str"), 2, "use isinstance"),
        (body("try:", "    pass", "except:", "    pass", "return False"), 4, "except (IndexError"),
        (body("raise KeyError('x')"), 2, 'raise ValueError("reason") is allowed'),
        (body("with x:", "    pass", "return False"), 2, "write the body alone"),
        (body("return klines['1h'].close.astype(float)[-1] > 0"), 2, "float64 already"),
        (body("return '{}'.format(symbol) == ''"), 2, "f-string"),
        ("import numpy as np\n" + body("return False"), 1, "numpy is not importable"),
        ("Y = [1]\nY.append(2)\n" + body("return False"), 2, "inside check_signal"),
        ("X = 1\nX += 1\n" + body("return False"), 2, "only function definitions and constants"),
        ("check_signal = 1\n", 1, "must be a function"),
        (body("return False") + body("return True"), 3, "defined more than once: keep one"),
        (body("return '__x' == symbol"), 2, "may not contain '__'"),
        ("def check_signal(symbol, ticker, klines=None):\n    return False\n", 1, "exactly three"),
        ("def check_signal(symbol, ticker, *klines):\n    return False\n", 1, "exactly three"),
    ],
)
def test_errors_name_the_line_and_the_fix(code: str, line: int, words: str) -> None:
    with pytest.raises(SignalCodeError) as caught:
        compile_signal(code)

    assert caught.value.line == line
    assert words in str(caught.value)


def test_empty_long_and_deeply_nested_code_is_refused_cleanly() -> None:
    with pytest.raises(SignalCodeError, match="empty"):
        compile_signal("  \n")
    with pytest.raises(SignalCodeError, match="longer than"):
        compile_signal(body("return False") + "#" * MAX_SOURCE_CHARS)
    with pytest.raises(SignalCodeError, match=r"nested|syntax error"):
        compile_signal(body("return " + "(" * 5000 + "1" + ")" * 5000 + " > 0"))
    with pytest.raises(SignalCodeError, match="nested"):
        compile_signal(body("return " + "1 + " * 20_000 + "1 > 0"))


def test_cache_compiles_once_per_version_and_remembers_rejections() -> None:
    cache = ProgramCache()
    good, bad = body("return True"), body("import os")

    first = cache.get("t-1", 1, good)
    again = cache.get("t-1", 1, "ignored: the version is what counts")
    with pytest.raises(SignalCodeError) as rejected:
        cache.get("t-1", 2, bad)
    with pytest.raises(SignalCodeError) as rejected_again:
        cache.get("t-1", 2, bad)
    third = cache.get("t-1", 3, good)

    assert again is first
    assert rejected_again.value is rejected.value
    assert third is not first and third.key == first.key and third.version == 3
    cache.forget("t-1")
    assert len(cache) == 0
