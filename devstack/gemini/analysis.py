"""Analysis answers: decide from the indicators and candles in an analyze-signal prompt, with sane stops."""

from __future__ import annotations

import json
import re
from typing import Any

_CANDLE = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2} (\S+) (\S+) (\S+) (\S+) (\S+)$", re.MULTILINE)


def _json_after(heading: str, prompt: str) -> dict[str, Any]:
    match = re.search(rf"^## {re.escape(heading)} \(JSON\)\n(.+)$", prompt, re.MULTILINE)
    if not match:
        return {}
    try:
        value = json.loads(match.group(1))
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _first_number(indicators: dict[str, Any], name_part: str, key: str | None = None) -> float | None:
    for name, value in indicators.items():
        if name_part not in name.lower():
            continue
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, dict) and key is not None and isinstance(value.get(key), int | float):
            return float(value[key])
        if isinstance(value, list) and key is None and value and isinstance(value[-1], int | float):
            return float(value[-1])
    return None


def _average_range(prompt: str, price: float) -> float:
    """Mean high-low range of the first timeframe's recent candles (about an ATR); 1% of price if none."""
    ranges = []
    for match in _CANDLE.finditer(prompt):
        try:
            ranges.append(float(match.group(2)) - float(match.group(3)))
        except ValueError:
            continue
        if len(ranges) >= 14:
            break
    average = sum(ranges) / len(ranges) if ranges else 0.0
    return average if average > 0 else price * 0.01


def _round_price(value: float) -> float:
    return float(f"{value:.6g}")


def _score(indicators: dict[str, Any], price: float) -> tuple[int, str]:
    """Positive is bullish, negative bearish; with the evidence in words."""
    evidence: list[str] = []
    score = 0
    rsi = _first_number(indicators, "rsi")
    if rsi is not None:
        step = 2 if rsi < 30 or rsi > 70 else 1 if rsi < 40 or rsi > 60 else 0
        score += step if rsi < 50 else -step
        evidence.append(f"RSI {rsi:.1f}")
    histogram = _first_number(indicators, "macd", "histogram")
    if histogram is not None:
        score += 1 if histogram > 0 else -1
        evidence.append(f"MACD histogram {histogram:.4g}")
    average = _first_number(indicators, "ema") or _first_number(indicators, "sma")
    if average is not None:
        score += 1 if price > average else -1
        evidence.append(f"price {'above' if price > average else 'below'} the moving average {average:.6g}")
    return score, ", ".join(evidence) if evidence else "no indicators were provided"


def _entry(score: int, because: str, price: float, risk: float) -> dict[str, Any]:
    if score >= 2:
        return {
            "decision": "open_long",
            "reasoning": f"Bullish evidence ({because}); stop 1.5 ranges below, target 3 ranges above.",
            "metadata": {
                "stopLoss": _round_price(price - 1.5 * risk),
                "takeProfit": _round_price(price + 3 * risk),
                "positionSize": 0.5,
            },
        }
    if score <= -2:
        return {
            "decision": "open_short",
            "reasoning": f"Bearish evidence ({because}); stop 1.5 ranges above, target 3 ranges below.",
            "metadata": {
                "stopLoss": _round_price(price + 1.5 * risk),
                "takeProfit": _round_price(max(price - 3 * risk, price * 0.5)),
                "positionSize": 0.5,
            },
        }
    if score != 0:
        return {"decision": "watch", "reasoning": f"Leaning but not convincing ({because}).", "metadata": {}}
    return {"decision": "no_trade", "reasoning": f"No edge ({because}).", "metadata": {}}


def _manage(position: dict[str, Any], score: int, because: str, price: float, risk: float) -> dict[str, Any]:
    long = position.get("side") == "long"
    entry = float(position.get("entryPrice") or price)
    stop = position.get("stopLoss")
    if score <= -2 if long else score >= 2:
        return {"decision": "close", "reasoning": f"The setup is invalidated ({because}).", "metadata": {}}
    in_profit = (price - entry) * (1 if long else -1)
    stop_behind_entry = stop is None or (float(stop) < entry if long else float(stop) > entry)
    if in_profit > risk and stop_behind_entry:
        return {
            "decision": "update_stop_loss",
            "reasoning": f"One average range in profit ({because}); move the stop to break-even.",
            "metadata": {"newStopLoss": _round_price(entry)},
        }
    return {"decision": "watch", "reasoning": f"Hold the position ({because}).", "metadata": {}}


def build_decision(prompt: str) -> dict[str, Any]:
    """The decision JSON for an analyze-signal prompt; only decisions the prompt allows are chosen."""
    ticker = _json_after("Ticker", prompt)
    indicators = _json_after("Indicators", prompt)
    price = float(ticker.get("lastPrice") or 0) or 1.0
    allowed_match = re.search(r"^Allowed decisions now: (.+)$", prompt, re.MULTILINE)
    allowed = {item.strip() for item in allowed_match.group(1).split(",")} if allowed_match else set()
    position_match = re.search(r"^Position: (\{.*\})$", prompt, re.MULTILINE)
    position: dict[str, Any] | None = json.loads(position_match.group(1)) if position_match else None

    score, because = _score(indicators, price)
    atr = _first_number(indicators, "atr")
    risk = atr if atr and atr > 0 else _average_range(prompt, price)
    if position is None:
        decision = _entry(score, because, price, risk)
    else:
        decision = _manage(position, score, because, price, risk)
    if allowed and decision["decision"] not in allowed:
        decision = {
            "decision": "watch",
            "reasoning": f"Waiting for clearer evidence ({because}).",
            "metadata": {},
        }
    return {**decision, "confidence": min(95, 50 + 10 * abs(score))}
