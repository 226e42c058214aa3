"""Where the local stack finds the recorded candles it replays (the recordings themselves:
worker/market/recordings.py)."""

from __future__ import annotations

import os
from pathlib import Path

from devstack.config import REPO_ROOT

DATA_DIR_ENV = "TRADEMIND_KLINES_DIR"


def default_data_dir() -> Path:
    """$TRADEMIND_KLINES_DIR, else the shared recordings next to the repository (../shared/data/klines)."""
    override = os.environ.get(DATA_DIR_ENV)
    return Path(override) if override else REPO_ROOT.parent / "shared" / "data" / "klines"
