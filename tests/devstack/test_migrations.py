"""Migrations apply in version order, each once, each atomically, and failures say where."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack import migrations
from devstack.stack import DevStack


@pytest.fixture
def scratch_db(stack: DevStack, db: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """An empty database with the migration history table, dropped afterwards."""
    name = f"migrations_{uuid.uuid4().hex[:8]}"
    db.execute(f"create database {name}")
    try:
        with stack.postgres.connect(name, autocommit=True) as conn:
            conn.execute("create schema supabase_migrations")
            conn.execute(
                "create table supabase_migrations.schema_migrations"
                " (version text primary key, statements text[], name text)"
            )
            yield conn
    finally:
        db.execute(f"drop database {name} with (force)")


def write(folder: Path, name: str, sql: str) -> Path:
    path = folder / name
    path.write_text(sql)
    return path


def test_discover_orders_by_version_and_rejects_bad_names(tmp_path: Path) -> None:
    write(tmp_path, "20260102000000_second.sql", "")
    write(tmp_path, "20260101000000_first.sql", "")

    assert [m.name for m in migrations.discover(tmp_path)] == ["first", "second"]

    write(tmp_path, "add_things.sql", "")
    with pytest.raises(migrations.MigrationError, match=r"add_things\.sql: migration files must be named"):
        migrations.discover(tmp_path)


def test_discover_rejects_a_duplicate_version(tmp_path: Path) -> None:
    write(tmp_path, "20260101000000_a.sql", "")
    write(tmp_path, "20260101000000_b.sql", "")

    with pytest.raises(migrations.MigrationError, match="version 20260101000000 is also used"):
        migrations.discover(tmp_path)


def test_pending_migrations_apply_once_in_order(tmp_path: Path, scratch_db: psycopg.Connection[Any]) -> None:
    write(tmp_path, "1_create.sql", "create table things (id int primary key);")
    write(tmp_path, "2_fill.sql", "insert into things values (1), (2);")

    first_run = migrations.apply_pending(scratch_db, tmp_path)
    second_run = migrations.apply_pending(scratch_db, tmp_path)

    assert [m.version for m in first_run] == ["1", "2"]
    assert second_run == []
    assert scratch_db.execute("select count(*) from things").fetchone() == (2,)
    history = scratch_db.execute(
        "select version, name from supabase_migrations.schema_migrations order by 1"
    ).fetchall()
    assert history == [("1", "create"), ("2", "fill")]


def test_a_failing_migration_leaves_nothing_behind_and_names_its_line(
    tmp_path: Path, scratch_db: psycopg.Connection[Any]
) -> None:
    write(tmp_path, "1_ok.sql", "create table kept (id int);")
    write(
        tmp_path,
        "2_broken.sql",
        "create table half_done (id int);\n\ninsert into missing_table values (1);\n",
    )

    with pytest.raises(migrations.MigrationError) as failure:
        migrations.apply_pending(scratch_db, tmp_path)

    assert str(failure.value).startswith('2_broken.sql:3: relation "missing_table" does not exist')
    tables = {
        row[0] for row in scratch_db.execute("select tablename from pg_tables where schemaname = 'public'")
    }
    assert tables == {"kept"}
    assert migrations.applied_versions(scratch_db) == {"1"}


def test_repository_migrations_are_all_recorded(db: psycopg.Connection[Any], stack: DevStack) -> None:
    expected = {m.version for m in migrations.discover(stack.config.migrations_dir)}

    assert migrations.applied_versions(db) == expected
