"""The cluster runs as an unprivileged user even when the checkout is somewhere that user cannot enter."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from devstack.config import StackConfig
from devstack.postgres import PostgresCluster
from devstack.processes import ProcessRegistry


@pytest.mark.skipif(os.geteuid() != 0, reason="the unprivileged fallback only exists when running as root")
def test_cluster_behind_a_private_folder_lives_in_var_tmp_and_is_linked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = tmp_path / "home"
    private.mkdir(mode=0o700)
    monkeypatch.setenv("TRADEMIND_DEVSTACK_DIR", str(private / ".devstack"))
    config = dataclasses.replace(StackConfig.load(), db_port=54399)
    cluster = PostgresCluster(config, ProcessRegistry(config.run_dir))

    try:
        cluster.initialise()
        cluster.start()
        cluster.wait_until_ready()
        with cluster.connect() as conn:
            row = conn.execute("select current_setting('data_directory')").fetchone()
        target = config.pg_dir.resolve()
        assert config.pg_dir.is_symlink()
        assert str(target).startswith("/var/tmp/trademind-devstack-")
        assert row == (str(target / "data"),)
    finally:
        cluster.destroy()

    assert not target.parent.exists()
    assert not config.pg_dir.exists()
