"""python -m bench: the stack is there for the benchmarks that need it and left as it was found."""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import pytest

from bench.__main__ import run_benchmarks
from bench.measurement import Measurement
from devstack.stack import DevStack


def benchmark(name: str, *, needs_stack: bool, seen: list[tuple[str, bool]], stack: DevStack) -> ModuleType:
    """A benchmark module that records whether the stack was up when it ran."""
    module = ModuleType(f"bench.{name}")
    module.NEEDS_STACK = needs_stack

    def run() -> list[Measurement]:
        seen.append((name, stack.is_up()))
        if name == "bench_broken":
            raise RuntimeError("no figures today")
        return [Measurement("figure", 1.0, "ms")]

    module.run = run
    return module


@pytest.fixture
def stopped_stack(stack: DevStack) -> Iterator[DevStack]:
    """The session's stack, stopped for the test and started again afterwards."""
    stack.down()
    yield stack
    stack.up()


def test_a_stopped_stack_is_started_for_the_benchmarks_that_need_it_and_stopped_again(
    stopped_stack: DevStack,
) -> None:
    seen: list[tuple[str, bool]] = []
    modules = [
        benchmark(name, needs_stack=needs, seen=seen, stack=stopped_stack)
        for name, needs in (("bench_alone", False), ("bench_broken", True), ("bench_on_stack", False))
    ]

    rows, failures = run_benchmarks(modules, stopped_stack)

    assert seen == [("bench_alone", False), ("bench_broken", True), ("bench_on_stack", True)]
    assert [suite for suite, _ in rows] == ["alone", "on_stack"]
    assert failures == ["bench_broken failed: RuntimeError: no figures today"]
    assert not any(part.running for part in stopped_stack.status())


def test_a_running_stack_is_left_running(stack: DevStack) -> None:
    seen: list[tuple[str, bool]] = []

    run_benchmarks([benchmark("bench_on_stack", needs_stack=True, seen=seen, stack=stack)], stack)

    assert seen == [("bench_on_stack", True)]
    assert stack.is_up()
