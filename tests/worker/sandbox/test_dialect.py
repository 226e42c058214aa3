"""The dialect of policy version 2: what it adds works in the sandbox, and the prompt's copy is current."""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from devstack.config import REPO_ROOT
from tests.worker.sandbox.conftest import btc_windows
from tests.worker.sandbox.hostile import body
from worker.sandbox import KlineSnapshot, SandboxConfig, SandboxPool, SignalRunner, compile_signal, dialect
from worker.sandbox.compiler import AVAILABLE_NAMES
from worker.sandbox.guards import loaded_modules_only, safe_builtins

DIALECT_PATH = REPO_ROOT / "supabase" / "functions" / "_shared" / "signal_dialect.json"


def test_committed_dialect_is_up_to_date() -> None:
    assert DIALECT_PATH.read_text() == dialect.render(), (
        "supabase/functions/_shared/signal_dialect.json is stale: run "
        "`python -m worker.sandbox.dialect > supabase/functions/_shared/signal_dialect.json`"
    )


def test_dialect_module_prints_the_dialect() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker.sandbox.dialect"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip

    assert result.stdout == DIALECT_PATH.read_text()


def test_the_namespace_is_exactly_what_the_dialect_states() -> None:
    namespace = safe_builtins()

    code = body("return True")
    # Programs cached under policy version 1 are never reused under version 2.
    assert dialect.POLICY_VERSION == 2
    assert compile_signal(code).key == hashlib.sha256(f"2\0{code}".encode()).hexdigest()
    assert set(namespace) == {
        *dialect.SAFE_BUILTIN_NAMES, *dialect.CATCHABLE_EXCEPTIONS, "True", "False", "None", "__import__",
    }  # fmt: skip
    assert {"list", "reversed", "tuple", "dict", "set", "str", "map", "filter", "isinstance", "pow"} <= set(
        namespace
    )
    assert "divmod" in AVAILABLE_NAMES and "BaseException" not in namespace and "Exception" not in namespace
    assert not {"type", "getattr", "eval", "open", "print", "MemoryError", "RecursionError"} & set(namespace)


def test_the_sandbox_import_hands_out_no_module_and_loads_none() -> None:
    assert "os" in sys.modules
    assert loaded_modules_only("numpy._core._methods") is None
    assert loaded_modules_only("os") is None  # a loaded module is confirmed, never returned
    with pytest.raises(ImportError, match="cannot import"):
        loaded_modules_only("antigravity")
    with pytest.raises(ImportError):
        loaded_modules_only("numpy", level=1)
    assert "antigravity" not in sys.modules


@pytest.mark.parametrize(
    "code",
    [
        "import math\nfrom typing import Optional\nfrom __future__ import annotations\n"
        + body("return True"),
        "from math import sqrt, log as ln\n" + body("return sqrt(4) == 2 and ln(1) == 0"),
        body("for _ in range(2):", "    pass", "return True"),
        body("try:", "    x = 1 / 0", "except Exception as error:", "    return str(error) != ''"),
        body("raise ValueError"),
        "def f(x, levels=[1, 2], names={'a': 1}):\n    return levels\n" + body("return True"),
        body("return True") + "\nif __name__ == '__main__':\n    print(check_signal('X', {}, {}))\n",
        "PERIOD = 20\nsma = lambda xs, n=PERIOD: sum(xs[-n:]) / n\n" + body("return True"),
    ],
    ids=[
        "habitual imports", "from math", "throwaway", "except Exception", "bare raise ValueError",
        "literal defaults", "main block", "module lambda",
    ],
)  # fmt: skip
def test_model_habits_compile(code: str) -> None:
    assert compile_signal(code).key


WIDE = """
LEVELS = [30, 70]


def average(values, period=14, weights=[1.0, 2.0], options={"strict": True}):
    window = values[-period:]
    return window.mean() if options["strict"] and len(weights) == 2 else 0.0


def check_signal(symbol, ticker, klines):
    k = klines["1h"]
    closes = get_closes(k)
    highs = k.high
    for _ in range(2):
        pass
    try:
        old = closes[-10_000]
    except (IndexError, KeyError):
        old = None
    try:
        ratio = 1 / float(closes[-1] - closes[-1])
    except ZeroDivisionError:
        ratio = 0.0
    if old is not None or ratio != 0.0:
        return False
    values = list(reversed(closes[-5:].tolist()))
    pairs = dict(zip(map(str, range(5)), values))
    rising = tuple(filter(lambda change: change > 0, [b - a for a, b in zip(values[1:], values)]))
    quotient, rest = divmod(len(closes), 7)
    checks = [
        highs[-56:-1].max() >= highs[-56:-1].min(),
        closes[-20:].std() >= 0 and closes[-20:].var() >= 0,
        closes.argmax() < len(closes) and closes.argmin() >= 0,
        closes.cumsum()[-1] > 0 and (closes[1:] - closes[:-1]).shape == (len(closes) - 1,),
        isinstance(pairs["0"], float) and len(set(LEVELS)) == 2 and pow(2, 3) == 8,
        quotient * 7 + rest == len(closes) and len(rising) <= 4,
        average(closes) > 0 and f"{closes[-1]:.2f}" != "" and "%s" % symbol == symbol,
    ]
    if not all(checks):
        return False
    if closes[-1] > closes[-2]:
        raise ValueError(f"{symbol} closed higher: {closes[-1]:.2f}")
    return True
"""


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runner() -> AsyncIterator[SignalRunner]:
    async with SandboxPool(SandboxConfig(processes=1)) as pool:
        yield SignalRunner(pool)


@pytest.mark.asyncio(loop_scope="module")
async def test_every_addition_runs_in_the_sandbox_and_a_decline_is_logged_once(
    runner: SignalRunner, caplog: pytest.LogCaptureFixture
) -> None:
    klines = btc_windows(12)
    higher = {s for s, data in klines.items() if data["1h"].close[-1] > data["1h"].close[-2]}
    assert 0 < len(higher) < len(klines)
    program = compile_signal(WIDE, trader_id="wide", version=1)

    with KlineSnapshot(klines) as snapshot, caplog.at_level(logging.INFO, "worker.sandbox.runner"):
        first = await runner.evaluate(program, list(klines), snapshot)
        second = await runner.evaluate(program, list(klines), snapshot)

    assert first.errors == {}, first.errors
    assert first.matches == [s for s in klines if s not in higher]
    assert set(first.declined) == higher
    symbol = next(iter(higher))
    assert first.declined[symbol] == f"{symbol} closed higher: {klines[symbol]['1h'].close[-1]:.2f}"
    assert second.declined == first.declined
    logged = [r.getMessage() for r in caplog.records if "check declined" in r.getMessage()]
    assert len(logged) == len(higher)  # once per (trader, symbol), not once per sweep
    assert all("trader_id=wide" in line for line in logged)


COLD_NUMPY = """
import numpy as np
from worker.market.klines import Klines
from worker.sandbox.compiler import compile_signal
from worker.sandbox.guards import program_globals
code = "def check_signal(symbol, ticker, klines):\\n    c = klines['1h'].close\\n    " + (
    "return [c.std(), c[-56:-1].max(), c.min(), c.mean(), c.var(), c.sum(), c.prod(), c.any()]\\n"
)
namespace = program_globals()
exec(compile_signal(code).code, namespace)
series = np.arange(1.0, 60.0)
klines = {"1h": Klines.from_arrays(series.astype(np.int64), series, series, series, series, series)}
print(namespace["check_signal"]("X", {}, klines))
"""


def test_numpy_methods_work_in_a_fresh_interpreter() -> None:
    # numpy's C methods import their Python half on first use through the caller's builtins; a fresh
    # process is the case that crashed with KeyError: '__import__' before the sandbox had its own.
    result = subprocess.run(
        [sys.executable, "-c", COLD_NUMPY],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("[")
