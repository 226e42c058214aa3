"""The signal sandbox: compiles traders' LLM-written signal code and runs it where it can reach nothing else.

Public API (import from here):

    compile_signal(code, *, trader_id=None, version=None) -> SignalProgram   raises SignalCodeError
    KlineSnapshot(klines_by_symbol, tickers)      one sweep's data in shared memory (a context manager)
    SandboxPool(SandboxConfig(...))                the sandbox processes (async context manager)
    SignalRunner(pool, reporter).load(...) / .evaluate(...) -> SweepResult   raises SignalRuntimeError
    SignalRunner.evaluate_steps(program, StepPlan(...), snapshot)   one symbol at many moments (backtests)
    TraderErrorReporter                            who marks a broken trader (worker.db.traders.TraderRows)

Threat model. Signal code is written by an LLM from a user's text, so treat it as written by an attacker
who has read RestrictedPython's source. It must not read or change anything but the klines and ticker it
is handed: not files, sockets, processes, the environment (which holds the machine token and Binance
keys), the worker's memory, or other traders' results; and it must not stop the worker or other traders
by looping, recursing, allocating or crashing. Out of scope: timing side channels between one user's own
traders (a machine serves a single user) and kernel exploits (Fly's VM boundary covers those).

Defence in depth, outermost last:
1. Compile-time policy (compiler.py, the dialect in dialect.py): an allow-list of syntax; no imports
   (`import math`, `typing` and `__future__` are dropped as no-ops, `from math import x` becomes
   `x = math.x`), classes, with, global/nonlocal, generators, del, match or decorators; no names or
   attributes starting with `_` except the throwaway `_`; no strings containing `__`; known internals
   (`format`, `gi_frame`, `f_globals`, numpy `tofile`...) refused; only functions and constants at module
   level; `check_signal` takes exactly three parameters. Errors carry the line and what to write instead.
   Policy version 2 argued its additions as follows:
   - builtins list reversed tuple dict set str map filter isinstance pow divmod: pure constructors and
     functions of plain values; the containers they build are the code's own, the iterators have no
     attributes (layer 3), and the type objects themselves have none either, so `str.format` or
     `dict.fromkeys` are unreachable; runaway sizes or loops end at the memory limit or the deadline.
   - try/except: only named arithmetic, lookup, value and type errors can be caught (`except Exception`
     is rewritten to exactly those), never the deadline (a BaseException), MemoryError, RecursionError or a
     guard's AttributeError; no bare except and no `finally` (which would run on after the deadline).
     Caught exceptions expose no attributes.
   - `raise ValueError(...)` is rewritten to raise a ValueError subclass the sandbox reads as "False,
     with this reason" (logged, clipped to one line); no other exception can be raised.
   - every parameter default is wrapped in a freeze when the function is defined (lists become tuples,
     dicts read-only views), so no default carries state from one check to the next.
   - f-strings: conversions and format specs never look up attributes (unlike `str.format`).
2. RestrictedPython's transformer: attribute, item, iteration, unpacking and in-place operations become
   calls to our guards.
3. A minimal namespace (guards.py): the dialect's builtins and catchable exceptions, a `math` proxy, the
   catalog's helpers; attributes are an allow-list per exact type (no attribute at all on functions,
   generators, types, exceptions, iterators); writes only into lists/dicts/sets the code built; module
   constants are frozen after loading. Its `__import__` exists only because numpy's C methods
   (`ndarray.max`, `.mean` ...) import lazily through the calling frame's builtins: it refuses any module
   not already loaded and returns nothing (CPython reads `sys.modules` itself), so it gives signal code no
   module object and loads no code.
4. A separate process per evaluation slot (child.py): started with `python -I`, an empty environment and
   cwd `/`; RLIMIT_AS (memory), RLIMIT_CPU (per batch), RLIMIT_FSIZE=0, RLIMIT_NOFILE, RLIMIT_CORE=0 and
   RLIMIT_NPROC=0 (effective only for a non-root uid); a CPU-time deadline per check that the code
   cannot catch; klines mapped read-only from shared memory.
5. The worker's watchdog (pool.py): a process silent past the deadline plus a grace period is killed;
   any fatal error, crash or malformed frame kills and replaces the process and fails only that trader's
   evaluation. The worker parses replies as a fixed binary format and never unpickles or evaluates them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = [
    "BatchOutcome",
    "KlineSnapshot",
    "SandboxConfig",
    "SandboxPool",
    "SignalCodeError",
    "SignalProgram",
    "SignalRunner",
    "SignalRuntimeError",
    "StepPlan",
    "SweepResult",
    "TraderErrorReporter",
    "compile_signal",
]

if TYPE_CHECKING:
    from worker.sandbox.compiler import SignalProgram, compile_signal
    from worker.sandbox.errors import SignalCodeError, SignalRuntimeError
    from worker.sandbox.pool import BatchOutcome, SandboxConfig, SandboxPool, StepPlan
    from worker.sandbox.runner import SignalRunner, SweepResult, TraderErrorReporter
    from worker.sandbox.snapshot import KlineSnapshot

# Loaded on first use: the sandbox process imports this package too, and must not pay for (or hold in
# memory) the modules only the worker side needs.
_HOMES = {
    "SignalProgram": "compiler", "compile_signal": "compiler", "SignalCodeError": "errors",
    "SignalRuntimeError": "errors", "SandboxConfig": "pool", "SandboxPool": "pool", "StepPlan": "pool",
    "BatchOutcome": "pool",
    "TraderErrorReporter": "runner", "SignalRunner": "runner", "SweepResult": "runner",
    "KlineSnapshot": "snapshot",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'worker.sandbox' has no attribute {name!r}")
    from importlib import import_module  # noqa: PLC0415 (see _HOMES)

    return getattr(import_module(f"worker.sandbox.{home}"), name)
