"""The decision the worker acts on, checked with the same JSON Schema the model and analyze-signal use."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from worker.domain.enums import AnalysisDecision
from worker.errors import WorkerError

if TYPE_CHECKING:
    from jsonschema import Draft202012Validator

# The one schema file: in the repository, and copied to /app/schemas in the worker image (Dockerfile).
SCHEMA_LOCATIONS = (
    Path(__file__).resolve().parents[2]
    / "supabase"
    / "functions"
    / "_shared"
    / "schemas"
    / "decision.schema.json",
    Path("/app/schemas/decision.schema.json"),
)

METADATA_FIELDS = (
    "stopLoss", "takeProfit", "positionSize", "closePercentage", "scaleInAmount", "scaleOutPercentage",
    "newStopLoss", "newTakeProfit",
)  # fmt: skip


class InvalidDecision(WorkerError):
    """An analysis that does not satisfy the decision schema; the worker must not act on it."""


@dataclass(frozen=True, slots=True)
class Decision:
    """One validated decision; metadata prices and fractions are exact Decimals (None when absent)."""

    decision: AnalysisDecision
    reasoning: str
    confidence: int
    stop_loss: Decimal | None = None
    take_profit: Decimal | None = None
    position_size: Decimal | None = None
    close_percentage: Decimal | None = None
    scale_in_amount: Decimal | None = None
    scale_out_percentage: Decimal | None = None
    new_stop_loss: Decimal | None = None
    new_take_profit: Decimal | None = None


@functools.cache
def decision_validator() -> Draft202012Validator:
    """The validator for the schema file (read once)."""
    # Imported when first needed, which is after /health answers: not on the worker's start-up path.
    from jsonschema import Draft202012Validator  # noqa: PLC0415

    for location in SCHEMA_LOCATIONS:
        if location.exists():
            schema = json.loads(location.read_text())
            Draft202012Validator.check_schema(schema)
            return Draft202012Validator(schema)
    raise FileNotFoundError(f"decision schema not found in {', '.join(map(str, SCHEMA_LOCATIONS))}")


def parse_decision(payload: Any) -> Decision:
    """Validate an analysis payload ({decision, reasoning, confidence, metadata}) and convert it.

    Raises:
        InvalidDecision: naming every rule the payload breaks.
    """
    errors = sorted(decision_validator().iter_errors(payload), key=lambda error: list(error.absolute_path))
    if errors:
        problems = "; ".join(
            f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors
        )
        raise InvalidDecision(f"decision rejected by the schema: {problems}")
    metadata = payload["metadata"]
    # Through str: a JSON number must become the Decimal it was written as, not the float's binary value.
    exact = {name: Decimal(str(metadata[name])) if name in metadata else None for name in METADATA_FIELDS}
    return Decision(
        decision=AnalysisDecision(payload["decision"]),
        reasoning=payload["reasoning"],
        confidence=int(payload["confidence"]),
        stop_loss=exact["stopLoss"],
        take_profit=exact["takeProfit"],
        position_size=exact["positionSize"],
        close_percentage=exact["closePercentage"],
        scale_in_amount=exact["scaleInAmount"],
        scale_out_percentage=exact["scaleOutPercentage"],
        new_stop_loss=exact["newStopLoss"],
        new_take_profit=exact["newTakeProfit"],
    )
