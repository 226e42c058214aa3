"""The worker's import graph keeps its layers: no module imports from a layer above its own.

    base < domain < adapters (db, market, indicators, sandbox) < scheduler < signals < trading < app

(`app` holds the composition roots: the worker's, the signal validator service's, and the backtest's.)

Every module of `worker/` must belong to a layer below, so a new module is placed on purpose. Within a
layer a module may import its neighbours; an import from a higher layer is the arrow this test refuses.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

WORKER = Path(__file__).resolve().parents[2] / "worker"

# Lowest first. A package name covers everything below it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("worker", "worker.errors", "worker.clock", "worker.retry", "worker.log_setup",
              "worker.components", "worker.metrics", "worker.load", "worker.tls")),
    ("domain", ("worker.domain",)),
    ("adapters", ("worker.db", "worker.market", "worker.indicators", "worker.sandbox")),
    ("scheduler", ("worker.scheduler",)),
    ("signals", ("worker.signals",)),
    ("trading", ("worker.trading",)),
    ("app", ("worker.app", "worker.__main__", "worker.settings", "worker.heartbeat", "worker.http_api",
             "worker.log_shipping", "worker.validator", "worker.backtest")),
]  # fmt: skip


def module_name(path: Path) -> str:
    parts = path.relative_to(WORKER.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(WORKER.rglob("*.py"))}


def layer_of(module: str) -> int:
    best: tuple[int, int] | None = None  # (length of the matching prefix, layer)
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[0]
            ):
                best = (len(prefix), index)
    if best is None or (best[0] == len("worker") and module != "worker"):
        raise AssertionError(f"{module} belongs to no layer: add it to LAYERS in {Path(__file__).name}")
    return best[1]


def imports(path: Path) -> Iterator[str]:
    """Every module `path` imports, at any depth (in functions and TYPE_CHECKING blocks too)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


def worker_imports(path: Path, known: dict[str, Path]) -> set[str]:
    return {name for name in imports(path) if name in known}


def test_every_worker_module_has_a_layer() -> None:
    for module in modules():
        layer_of(module)


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    known = modules()
    upward = []
    for module, path in known.items():
        own = layer_of(module)
        for imported in worker_imports(path, known):
            if layer_of(imported) > own:
                upward.append(
                    f"{module} ({LAYERS[own][0]}) imports {imported} ({LAYERS[layer_of(imported)][0]})"
                )
    assert upward == []


def test_only_the_database_gateway_talks_to_postgrest() -> None:
    clients = {
        module
        for module, path in modules().items()
        for imported in imports(path)
        if imported.split(".")[0] in ("postgrest", "supabase")
        or (imported.split(".")[0] == "httpx" and not module.startswith("worker.db"))
    }
    # The analysis client calls an Edge Function over HTTP, the klines backfill Binance's public REST API, and
    # worker.tls builds the TLS context the HTTPS clients share; every PostgREST call goes through worker.db.
    assert clients == {"worker.signals.analysis", "worker.market.rest", "worker.tls"}


def test_only_the_composition_roots_read_the_settings() -> None:
    known = modules()
    readers = {module for module, path in known.items() if "worker.settings" in worker_imports(path, known)}
    # The worker's, and the signal validator's (a service of its own that shares the sandbox).
    assert {module for module in readers if not module.startswith("worker.validator")} <= {
        "worker.app",
        "worker.__main__",
    }
