"""The machine's rows: the worker refuses a database schema it was not built for."""

from __future__ import annotations

import pytest

from worker.db.machine import SUPPORTED_SCHEMA_VERSIONS, check_schema_version
from worker.errors import ConfigError


def test_schema_version_check_refuses_unknown_versions() -> None:
    check_schema_version(max(SUPPORTED_SCHEMA_VERSIONS))

    with pytest.raises(ConfigError, match="999 is not supported"):
        check_schema_version(999)
