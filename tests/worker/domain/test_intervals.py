"""Timer intervals parse as the database allows them."""

from __future__ import annotations

import pytest

from worker.domain.intervals import FIXED_INTERVAL_SECS, parse_interval
from worker.errors import ConfigError


def test_every_fixed_and_close_interval_the_database_allows_parses() -> None:
    closes = ["1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d"]

    fixed = {text: parse_interval(text) for text in FIXED_INTERVAL_SECS}
    on_close = {text: parse_interval(f"{text}_close") for text in closes}

    assert fixed["1s"].period_secs == 1 and fixed["1d"].period_secs == 86_400
    assert not any(interval.on_close for interval in fixed.values())
    assert on_close["5m"].timeframe == "5m" and on_close["5m"].period_secs == 300
    assert on_close["8h"].period_secs == 8 * 3600


@pytest.mark.parametrize("text", ["2s", "1w", "5m_open", "_close", "1s_close", ""])
def test_unknown_intervals_are_refused_by_name(text: str) -> None:
    with pytest.raises(ConfigError, match="unknown timer interval"):
        parse_interval(text)
