"""Generated-style strategies in the sandbox match a plain-Python evaluation of the rule, on real candles.

The strategies are the Gemini stand-in's generated code (RSI, MACD cross and EMA cross with its inline EMA,
Bollinger breakout, volume spike) plus hand-written LLM-style code with a custom inline indicator. Each
runs over hundreds of windows of the recorded BTCUSDT 1h and ETHUSDT 1m candles; the reference
re-implements each rule loop by loop from the textbook formulas (tests/worker/indicators/reference.py).
"""

from __future__ import annotations

import statistics
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from devstack.gemini.strategy import build_strategy
from tests.worker.indicators import reference
from tests.worker.sandbox import recorded
from worker.market.klines import Klines
from worker.sandbox import KlineSnapshot, SandboxConfig, SandboxPool, SignalRunner, compile_signal

WINDOW = 300

CUSTOM_INLINE = '''"""Three green Heikin-Ashi candles breaking the 20-candle high."""


def heikin_ashi(opens, highs, lows, closes):
    ha_open = (opens[0] + closes[0]) / 2
    candles = []
    for o, h, low, c in zip(opens, highs, lows, closes):
        ha_close = (o + h + low + c) / 4
        candles.append((ha_open, ha_close))
        ha_open = (ha_open + ha_close) / 2
    return candles


def check_signal(symbol, ticker, klines):
    k = klines["1h"]
    closes = get_closes(k)
    if len(closes) < 50:
        return False
    candles = heikin_ashi(get_opens(k)[-50:], get_highs(k)[-50:], get_lows(k)[-50:], closes[-50:])
    green = all(close > open_ for open_, close in candles[-3:])
    return green and closes[-1] > max(get_highs(k)[-21:-1])
'''.replace("open_", "opened")

HELPER_COMBO = """def check_signal(symbol, ticker, klines):
    k = klines["1h"]
    if len(get_closes(k)) < 60:
        return False
    trend_up = get_closes(k)[-1] > get_latest_ema(k, 50)
    return trend_up and get_latest_rsi(k, 14) < 45
"""


def generated(description: str) -> str:
    return str(build_strategy(f"<<<DESCRIPTION\n{description}\nDESCRIPTION>>>")["signalCode"])


def rsi_below_35(k: Klines) -> bool:
    return reference.rsi(list(k.close), 14)[-1] < 35


def crossed_up(fast: list[float], slow: list[float]) -> bool:
    return fast[-2] <= slow[-2] and fast[-1] > slow[-1]


def macd_cross_up(k: Klines) -> bool:
    closes = list(k.close)
    fast, slow = reference.ema(closes, 12), reference.ema(closes, 26)
    macd = [f - s for f, s in zip(fast[25:], slow[25:], strict=True)]
    return crossed_up(macd, reference.ema(macd, 9))


def ema_cross_up(k: Klines) -> bool:
    closes = list(k.close)
    return crossed_up(reference.ema(closes, 9), reference.ema(closes, 21))


def bollinger_upper_break(k: Klines) -> bool:
    last = list(k.close[-20:])
    return last[-1] > statistics.fmean(last) + 2.0 * statistics.pstdev(last)


def volume_spike(k: Klines) -> bool:
    volumes = list(k.volume)
    return volumes[-1] > 1.5 * statistics.fmean(volumes[-20:])


def heikin_ashi_breakout(k: Klines) -> bool:
    o, h, lo, c = (list(values[-50:]) for values in (k.open, k.high, k.low, k.close))
    ha_open, colours = (o[0] + c[0]) / 2, []
    for i in range(50):
        ha_close = (o[i] + h[i] + lo[i] + c[i]) / 4
        colours.append(ha_close > ha_open)
        ha_open = (ha_open + ha_close) / 2
    return all(colours[-3:]) and c[-1] > max(list(k.high[-21:-1]))


def trend_pullback(k: Klines) -> bool:
    closes = list(k.close)
    return closes[-1] > reference.ema(closes, 50)[-1] and reference.rsi(closes, 14)[-1] < 45


STRATEGIES: list[tuple[str, str, Callable[[Klines], bool]]] = [
    ("rsi", generated("Buy when the RSI is below 35 on the 1h chart"), rsi_below_35),
    ("macd cross", generated("MACD crosses above its signal line on 1h"), macd_cross_up),
    ("ema cross", generated("EMA 9/21 cross upward on 1h"), ema_cross_up),
    (
        "bollinger breakout",
        generated("Close breaks above the upper Bollinger band, 1h"),
        bollinger_upper_break,
    ),
    ("volume spike", generated("Volume spike 1.5x on the 1h chart"), volume_spike),
    ("custom inline indicator", CUSTOM_INLINE, heikin_ashi_breakout),
    ("helpers combined", HELPER_COMBO, trend_pullback),
]


def windows() -> dict[str, dict[str, Klines]]:
    """Hundreds of 300-candle windows of real BTCUSDT 1h and ETHUSDT 1m candles, each as a 'symbol'."""
    found: dict[str, dict[str, Klines]] = {}
    for name, series, step in (
        ("BTC", recorded.load("BTCUSDT", "1h"), 71),
        ("ETH", recorded.load("ETHUSDT", "1m"), 149),
    ):
        for end in range(WINDOW, len(series) + 1, step):
            found[f"{name}{end:06d}"] = {"1h": recorded.window(series, end, WINDOW)}
    return found


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def runner() -> AsyncIterator[SignalRunner]:
    async with SandboxPool(SandboxConfig(processes=2)) as pool:
        yield SignalRunner(pool)


def test_the_stand_in_wrote_the_strategies_the_test_means() -> None:
    assert "get_latest_rsi(k, 14)" in STRATEGIES[0][1] and "rsi < 35" in STRATEGIES[0][1]
    assert (
        "def ema_values" in STRATEGIES[1][1] and "signal_line = ema_values(macd_line, 9)" in STRATEGIES[1][1]
    )
    assert "ema_values(closes, 9)" in STRATEGIES[2][1] and "ema_values(closes, 21)" in STRATEGIES[2][1]
    assert "get_latest_bollinger_bands(k, 20, 2.0)" in STRATEGIES[3][1] and "> upper" in STRATEGIES[3][1]
    assert "1.5 * get_latest_volume_ma(k, 20)" in STRATEGIES[4][1]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("name", "code", "rule"), STRATEGIES, ids=[name for name, _, _ in STRATEGIES])
async def test_strategy_matches_exactly_where_the_reference_does(
    runner: SignalRunner, name: str, code: str, rule: Callable[[Klines], bool]
) -> None:
    data = windows()
    program = compile_signal(code, trader_id=f"strategy-{name}", version=1)
    expected = [symbol for symbol, by_timeframe in data.items() if rule(by_timeframe["1h"])]

    with KlineSnapshot(data) as snapshot:
        result = await runner.evaluate(program, list(data), snapshot)

    assert result.errors == {}
    assert result.checked == len(data) > 500
    assert 5 <= len(expected) < len(data) // 2  # the rule fires, but not everywhere
    assert result.matches == expected
