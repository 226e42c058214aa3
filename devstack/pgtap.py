"""Run the pgTAP suites in supabase/tests with pg_prove, as `supabase test db` does."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from devstack.config import StackConfig
from devstack.errors import StackError
from devstack.postgres import PostgresCluster
from devstack.processes import ProcessRegistry


def test_files(paths: list[Path]) -> list[Path]:
    """Expand folders to their .sql/.pg files, in name order (the helpers file sorts first)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in {".sql", ".pg"})
        else:
            files.append(path)
    return files


def run_pg_prove(config: StackConfig, paths: list[Path], *, verbose: bool = False) -> int:
    """Install pgTAP if needed, run pg_prove over `paths`, then drop what this run installed."""
    pg_prove = shutil.which("pg_prove")
    if pg_prove is None:
        raise StackError("pg_prove is not installed: run `make setup`")
    cluster = PostgresCluster(config, ProcessRegistry(config.run_dir))
    with cluster.connect(autocommit=True) as conn:
        installed_now = conn.execute(
            "select not exists (select from pg_extension where extname = 'pgtap')"
        ).fetchone()
        conn.execute("create extension if not exists pgtap with schema extensions")
    env = {
        **os.environ,
        "PGHOST": "127.0.0.1",
        "PGPORT": str(config.db_port),
        "PGUSER": "postgres",
        "PGPASSWORD": "postgres",
        "PGDATABASE": "postgres",
        "PGOPTIONS": "--search_path=public,extensions",
    }
    argv = [pg_prove, "--failures", "--timer", *(["--verbose"] if verbose else [])]
    try:
        return subprocess.run([*argv, *map(str, test_files(paths))], env=env, check=False).returncode
    finally:
        with cluster.connect(autocommit=True) as conn:
            conn.execute("drop schema if exists tests cascade")
            if installed_now and installed_now[0]:
                conn.execute("drop extension if exists pgtap")
