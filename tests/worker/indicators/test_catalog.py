"""The committed helper catalog matches the code, and lists every helper the seed promises."""

from __future__ import annotations

import json
import subprocess
import sys

from devstack.config import REPO_ROOT
from worker.indicators import catalog, helpers

CATALOG_PATH = REPO_ROOT / "supabase" / "functions" / "_shared" / "signal_helpers.json"

SEED_HELPERS = {
    "get_latest_sma", "get_latest_ema", "get_latest_wma", "get_latest_vwap", "get_latest_rsi",
    "get_latest_macd", "get_latest_stochastic", "get_latest_cci", "get_latest_williams_r", "get_latest_roc",
    "get_latest_bollinger_bands", "get_latest_atr", "get_latest_keltner_channels",
    "get_latest_donchian_channels", "get_latest_volume", "get_latest_volume_change", "get_latest_obv",
    "get_latest_volume_ma", "get_latest_adx", "get_latest_aroon", "get_price_change",
    "get_price_change_percent", "get_highest_high", "get_lowest_low", "get_closes", "get_opens",
    "get_highs", "get_lows", "get_volumes",
}  # fmt: skip


def test_committed_catalog_is_up_to_date() -> None:
    committed = CATALOG_PATH.read_text()

    assert committed == catalog.render(), (
        "supabase/functions/_shared/signal_helpers.json is stale: run "
        "`python -m worker.indicators.catalog > supabase/functions/_shared/signal_helpers.json`"
    )


def test_catalog_lists_every_seed_helper_with_signature_and_doc() -> None:
    document = json.loads(CATALOG_PATH.read_text())

    names = {entry["name"] for entry in document["helpers"]}
    assert names == SEED_HELPERS == set(helpers.__all__)
    rsi = next(entry for entry in document["helpers"] if entry["name"] == "get_latest_rsi")
    assert rsi["signature"] == "get_latest_rsi(k, period=14) -> float"
    assert rsi["doc"] and "\n" not in rsi["doc"]
    assert document["kline_fields"] == ["open_time", "open", "high", "low", "close", "volume"]
    assert document["timeframes"] == [
        "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d",
    ]  # fmt: skip


def test_catalog_module_prints_the_catalog() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "worker.indicators.catalog"],
        cwd=REPO_ROOT, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip

    assert result.stdout == CATALOG_PATH.read_text()
