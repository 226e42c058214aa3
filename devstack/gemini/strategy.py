"""Strategy answers: recognise the common ideas in a description and write working signal code for them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

TIMEFRAMES = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d")
CLOCK_INTERVALS = ("1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "12h", "1d")
_WORD_TIMEFRAMES = {
    r"\b(?:1|one)[- ]?min(?:ute)?s?\b": "1m",
    r"\b(?:5|five)[- ]?min(?:ute)?s?\b": "5m",
    r"\b(?:15|fifteen)[- ]?min(?:ute)?s?\b": "15m",
    r"\b(?:30|thirty)[- ]?min(?:ute)?s?\b": "30m",
    r"\bhourly\b|\b(?:1|one)[- ]?hours?\b": "1h",
    r"\b(?:4|four)[- ]?hours?\b": "4h",
    r"\bdaily\b|\b(?:1|one)[- ]?days?\b": "1d",
}
_COINS = (
    "BTC",
    "ETH",
    "SOL",
    "BNB",
    "XRP",
    "ADA",
    "DOGE",
    "AVAX",
    "DOT",
    "LINK",
    "LTC",
    "TRX",
    "ATOM",
    "NEAR",
)
_COIN_NAMES = {"bitcoin": "BTC", "ether": "ETH", "ethereum": "ETH", "solana": "SOL", "dogecoin": "DOGE"}

# Module-level helpers the generated code may define (the contract allows helper functions).
_EMA_HELPER = """def ema_values(values, period):
    alpha = 2.0 / (period + 1)
    current = float(sum(values[:period])) / period
    out = [current]
    for value in values[period:]:
        current = current + alpha * (float(value) - current)
        out.append(current)
    return out
"""


@dataclass
class _Idea:
    """One recognised condition: the lines computing it, its boolean name, and how much history it needs."""

    lines: list[str]
    condition: str
    history: int
    summary: str
    needs_ema_helper: bool = False
    instructions: list[str] = field(default_factory=list)


def description_of(prompt: str) -> str:
    match = re.search(r"<<<DESCRIPTION\n(.*?)\nDESCRIPTION>>>", prompt, re.DOTALL)
    return match.group(1) if match else prompt


def _timeframes(text: str) -> list[str]:
    found: list[tuple[int, str]] = []
    for match in re.finditer(r"(?<![\w.])(\d{1,2}[mhd])\b", text, re.IGNORECASE):
        if match.group(1).lower() in TIMEFRAMES:
            found.append((match.start(), match.group(1).lower()))
    for pattern, timeframe in _WORD_TIMEFRAMES.items():
        found += [(match.start(), timeframe) for match in re.finditer(pattern, text, re.IGNORECASE)]
    ordered = list(dict.fromkeys(timeframe for _, timeframe in sorted(found)))
    return ordered[:4] or ["1h"]


def _symbols(text: str) -> list[str]:
    found: list[tuple[int, str]] = []
    for match in re.finditer(r"\b([A-Z]{2,10})(USDT)?\b", text):
        if match.group(2) or match.group(1) in _COINS:
            found.append((match.start(), match.group(1) + "USDT"))
    for name, coin in _COIN_NAMES.items():
        found += [(m.start(), coin + "USDT") for m in re.finditer(rf"\b{name}\b", text, re.IGNORECASE)]
    ordered = list(dict.fromkeys(symbol for _, symbol in sorted(found)))
    return ordered[:20] or ["BTCUSDT", "ETHUSDT"]


def _direction(text: str, default: str) -> str:
    if re.search(r"\b(above|over|bullish|up(?:ward)?|golden)\b", text):
        return "up"
    if re.search(r"\b(below|under|bearish|down(?:ward)?|death)\b", text):
        return "down"
    return default


def _rsi(text: str) -> _Idea | None:
    if "rsi" not in text and "oversold" not in text and "overbought" not in text:
        return None
    # "RSI(7)" or "7-period RSI" name a period; "RSI 30" alone is a threshold.
    period_match = re.search(r"rsi\s*\(\s*(\d{1,3})\s*\)|(\d{1,3})[- ]period rsi", text)
    period = int(next(group for group in period_match.groups() if group)) if period_match else 14
    period = period if 2 <= period <= 100 else 14
    below = re.search(
        r"(?:below|under|<|less than|drops? (?:below|under)|crosses below)\s*(\d{1,2}(?:\.\d+)?)", text
    )
    above = re.search(r"(?:above|over|>|greater than|rises? above|crosses above)\s*(\d{1,2}(?:\.\d+)?)", text)
    if below or ("oversold" in text and not above):
        threshold = float(below.group(1)) if below else 30.0
        return _Idea(
            [f"rsi = get_latest_rsi(k, {period})"],
            f"rsi < {threshold:g}",
            period * 3,
            f"RSI({period}) below {threshold:g}",
            instructions=[
                f"The entry trigger is RSI({period}) under {threshold:g} (oversold): confirm the selling "
                "is exhausting (long lower wicks, RSI turning up) before buying."
            ],
        )
    threshold = float(above.group(1)) if above else 70.0
    return _Idea(
        [f"rsi = get_latest_rsi(k, {period})"],
        f"rsi > {threshold:g}",
        period * 3,
        f"RSI({period}) above {threshold:g}",
        instructions=[
            f"The trigger is RSI({period}) over {threshold:g} (strong momentum or overbought): decide "
            "between a momentum long and a fade short from the trend on the higher timeframe."
        ],
    )


def _macd(text: str) -> _Idea | None:
    if "macd" not in text:
        return None
    tail = text[text.index("macd") :]
    up = _direction(tail[:80], "up") == "up"
    comparison = "macd_line[-2] <= signal_line[-2] and macd_line[-1] > signal_line[-1]"
    if not up:
        comparison = "macd_line[-2] >= signal_line[-2] and macd_line[-1] < signal_line[-1]"
    lines = [
        "fast = ema_values(closes, 12)",
        "slow = ema_values(closes, 26)",
        "macd_line = [f - s for f, s in zip(fast[-len(slow):], slow)]",
        "signal_line = ema_values(macd_line, 9)",
        f"macd_cross = {comparison}",
    ]
    word = "above" if up else "below"
    return _Idea(
        lines,
        "macd_cross",
        60,
        f"MACD(12, 26, 9) crossing {word} its signal line",
        needs_ema_helper=True,
        instructions=[
            f"The trigger is a fresh MACD cross {word} the signal line: trust it more when the histogram "
            "expands and price is on the same side of the 50 EMA."
        ],
    )


def _ema_cross(text: str) -> _Idea | None:
    golden = "golden cross" in text or "death cross" in text
    match = re.search(
        r"(?:ema|moving average)s?\s*\(?(\d{1,3})\)?\D{1,40}?(?:ema|moving average)?\s*\(?(\d{1,3})\)?", text
    )
    slash = re.search(r"(\d{1,3})\s*/\s*(\d{1,3})\s*(?:ema|moving average)", text)
    if golden:
        fast, slow = 50, 200
    elif slash:
        fast, slow = sorted((int(slash.group(1)), int(slash.group(2))))
    elif match and "cross" in text and "macd" not in text[max(0, match.start() - 10) : match.end()]:
        fast, slow = sorted((int(match.group(1)), int(match.group(2))))
    elif "ema" in text and "cross" in text:
        fast, slow = 9, 21
    else:
        return None
    if not 2 <= fast < slow <= 400:
        return None
    up = _direction(text, "up") == "up" and "death cross" not in text
    comparison = "fast_ema[-2] <= slow_ema[-2] and fast_ema[-1] > slow_ema[-1]"
    if not up:
        comparison = "fast_ema[-2] >= slow_ema[-2] and fast_ema[-1] < slow_ema[-1]"
    word = "above" if up else "below"
    return _Idea(
        [
            f"fast_ema = ema_values(closes, {fast})",
            f"slow_ema = ema_values(closes, {slow})",
            f"ema_cross = {comparison}",
        ],
        "ema_cross",
        slow + 2,
        f"EMA {fast} crossing {word} EMA {slow}",
        needs_ema_helper=True,
        instructions=[
            f"The trigger is EMA {fast} crossing {word} EMA {slow}: avoid entries right into a nearby "
            "swing high/low and when the crossing happens in a flat, choppy range."
        ],
    )


def _bollinger(text: str) -> _Idea | None:
    if "bollinger" not in text:
        return None
    tail = text[text.index("bollinger") - 40 if text.index("bollinger") >= 40 else 0 :]
    up = "upper" in tail or (_direction(tail, "up") == "up" and "lower" not in tail)
    comparison = "closes[-1] > upper" if up else "closes[-1] < lower"
    band = "upper" if up else "lower"
    return _Idea(
        ["upper, middle, lower = get_latest_bollinger_bands(k, 20, 2.0)", f"band_break = {comparison}"],
        "band_break",
        22,
        f"close beyond the {band} Bollinger Band (20, 2)",
        instructions=[
            f"The trigger is a close beyond the {band} Bollinger Band: a breakout needs rising volume; "
            "without it, treat it as an overextension that may snap back to the middle band."
        ],
    )


def _volume(text: str) -> _Idea | None:
    if "volume" not in text:
        return None
    if not re.search(r"spike|surge|jump|(\d+(?:\.\d+)?)\s*x|times|twice|double|triple|above average", text):
        return None
    factor = 2.0
    multiple = re.search(r"(\d+(?:\.\d+)?)\s*(?:x|times)", text)
    if multiple and 1.0 < float(multiple.group(1)) <= 20:
        factor = float(multiple.group(1))
    elif "triple" in text:
        factor = 3.0
    return _Idea(
        [
            "volumes = get_volumes(k)",
            f"volume_spike = volumes[-1] > {factor:g} * get_latest_volume_ma(k, 20)",
        ],
        "volume_spike",
        21,
        f"volume above {factor:g}x its 20-candle average",
        instructions=[
            f"Volume must be at least {factor:g}x its 20-candle average: make sure the spike is in the "
            "direction of the trade, not a capitulation against it."
        ],
    )


def build_strategy(prompt: str) -> dict[str, object]:
    """The strategy JSON for a generate-strategy prompt (the description sits between the markers)."""
    description = description_of(prompt)
    text = description.lower()
    ideas = [
        idea for idea in (_rsi(text), _macd(text), _ema_cross(text), _bollinger(text), _volume(text)) if idea
    ]
    if not ideas:
        ideas = [
            _Idea(
                ["trend = closes[-1] > get_latest_ema(k, 50)", "momentum = get_latest_rsi(k, 14) > 50"],
                "trend and momentum",
                60,
                "price above its 50 EMA with RSI(14) above 50",
                instructions=[
                    "No specific indicator was named, so the trigger is a simple uptrend (close above "
                    "EMA 50, RSI above 50): only enter on a pullback that holds the EMA."
                ],
            )
        ]
    timeframes = _timeframes(description)
    primary = timeframes[0]
    joiner = " or " if re.search(r"\beither\b|\bor\b", text) and len(ideas) > 1 else " and "
    history = max(idea.history for idea in ideas)
    body = [
        "def check_signal(symbol, ticker, klines):",
        f'    k = klines["{primary}"]',
        "    closes = get_closes(k)",
        f"    if len(closes) < {history}:",
        "        return False",
    ]
    for idea in ideas:
        body += [f"    {line}" for line in idea.lines]
    body.append(f"    return bool({joiner.join(f'({idea.condition})' for idea in ideas)})")
    helper = _EMA_HELPER + "\n\n" if any(idea.needs_ema_helper for idea in ideas) else ""
    name_match = re.search(r"The user named the strategy: (\".*\")\.", prompt)
    summary = joiner.join(idea.summary for idea in ideas)
    name = name_match.group(1).strip('"') if name_match else summary[:1].upper() + summary[1:80]
    instructions = [
        f"Signal: {summary} on the {primary} chart.",
        *[line for idea in ideas for line in idea.instructions],
        "Prefer no_trade when volume is thin or the higher-timeframe trend disagrees. For an entry, put the "
        "stop beyond the recent swing (about 1.5 ATR) and the target at least twice the risk. On an open "
        "position, move the stop to break-even after one ATR in profit and close when the setup is "
        "invalidated.",
    ]
    reanalysis = primary if primary in CLOCK_INTERVALS else "4h"
    return {
        "name": name[:100],
        "signalCode": helper + "\n".join(body) + "\n",
        "aiInstructions": " ".join(instructions),
        "timeframes": timeframes,
        "recommendedInterval": f"{primary}_close",
        "reanalysisInterval": reanalysis,
        "symbols": _symbols(description),
    }
