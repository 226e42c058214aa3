"""Chat answers for the `ask` function: read the question and the quoted context document, answer from it.

Like a model that follows its system instruction, the stand-in reads the context only as data: it quotes what
the trader, the position and the latest analysis say, whatever instructions that stored text contains.
"""

from __future__ import annotations

import json
import re
from typing import Any

_QUESTION = re.compile(r"^The trader asks \(JSON string\): (.+)$", re.MULTILINE)
_CONTEXT = re.compile(r"^BEGIN_CONTEXT_([0-9a-f]+)\n(.*)\nEND_CONTEXT_\1$", re.MULTILINE | re.DOTALL)
QUOTE_CHARS = 160


def _quote(text: Any) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= QUOTE_CHARS else flat[: QUOTE_CHARS - 1] + "…"


def _position_sentence(position: dict[str, Any]) -> str:
    levels = [
        f"{label} {position[key]}" if position.get(key) is not None else f"no {label}"
        for key, label in (("stopLoss", "stop-loss"), ("takeProfit", "take-profit"))
    ]
    sentence = (
        f"Your {position.get('status', 'open')} {position.get('side')} {position.get('symbol')} position "
        f"(entry {position.get('entryPrice')}, size {position.get('size')}) has {' and '.join(levels)}"
    )
    if position.get("lastSeenPrice") is not None:
        sentence += f"; the last price the worker saw was {position['lastSeenPrice']}"
    return sentence + "."


def build_answer(prompt: str) -> dict[str, Any]:
    """The {answer} object for an ask prompt; a prompt without the context block gets a plain refusal."""
    question_match = _QUESTION.search(prompt)
    context_match = _CONTEXT.search(prompt)
    if question_match is None or context_match is None:
        return {"answer": "I can only answer questions about your traders and positions."}
    question = json.loads(question_match.group(1))
    context = json.loads(context_match.group(2))
    sentences = [f"You asked: “{_quote(question)}”."]
    trader = context.get("trader") or {}
    if trader:
        sentences.append(
            f"Trader “{_quote(trader.get('name'))}” is {trader.get('status')} and follows these "
            f"instructions: “{_quote(trader.get('instructions'))}”."
        )
    if context.get("position"):
        sentences.append(_position_sentence(context["position"]))
    open_positions = context.get("openPositions") or []
    if open_positions:
        sentences.append(f"It has {len(open_positions)} open position(s).")
        sentences.append(_position_sentence(open_positions[0]))
    analyses = context.get("recentAnalyses") or []
    if analyses:
        latest = analyses[0]
        sentences.append(
            f"The latest analysis ({latest.get('decision')}, confidence {latest.get('confidence')}) said: "
            f"“{_quote(latest.get('reasoning'))}”."
        )
    else:
        sentences.append("There is no analysis yet.")
    return {"answer": " ".join(sentences)}
