"""One benchmark figure, and the table they are printed in."""

from __future__ import annotations

import statistics
from dataclasses import dataclass


@dataclass(frozen=True)
class Measurement:
    name: str
    value: float
    unit: str
    detail: str = ""


def median_and_p95(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def format_table(rows: list[tuple[str, Measurement]]) -> str:
    header = ("benchmark", "measurement", "value", "unit", "detail")
    lines = [header] + [
        (suite, m.name, f"{m.value:,.3f}".rstrip("0").rstrip("."), m.unit, m.detail) for suite, m in rows
    ]
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    rendered = [
        " | ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True)) for line in lines
    ]
    rendered.insert(1, "-+-".join("-" * width for width in widths))
    return "\n".join(rendered)
