"""The real Supabase CLI applies migrations and the seed once each, atomically, and says where it failed."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devstack.stack import DevStack
from devstack.supabase_cli import HistoryRow, SupabaseCli, SupabaseCliError


@dataclass(frozen=True)
class Project:
    """A scratch Supabase project folder and an empty database, with the CLI pointed at both."""

    migrations: Path
    seed: Path
    db: psycopg.Connection[Any]
    cli: SupabaseCli

    def write(self, name: str, sql: str) -> None:
        (self.migrations / name).write_text(sql)

    def history(self) -> list[tuple[str, str, list[str]]]:
        query = "select version, name, statements from supabase_migrations.schema_migrations order by 1"
        return [(row[0], row[1], row[2]) for row in self.db.execute(query).fetchall()]

    def tables(self) -> set[str]:
        rows = self.db.execute("select tablename from pg_tables where schemaname = 'public'").fetchall()
        return {row[0] for row in rows}


@pytest.fixture
def project(stack: DevStack, db: psycopg.Connection[Any], tmp_path: Path) -> Iterator[Project]:
    name = f"cli_{uuid.uuid4().hex[:8]}"
    supabase_dir = tmp_path / "supabase"
    (supabase_dir / "migrations").mkdir(parents=True)
    (supabase_dir / "config.toml").write_text(
        f'project_id = "scratch"\n[db]\nport = {stack.config.db_port}\nmajor_version = 15\n'
        '[db.seed]\nenabled = true\nsql_paths = ["./seed.sql"]\n'
    )
    db.execute(f"create database {name}")
    try:
        with stack.postgres.connect(name, autocommit=True) as conn:
            cli = SupabaseCli(stack.config, workdir=tmp_path, dbname=name)
            yield Project(supabase_dir / "migrations", supabase_dir / "seed.sql", conn, cli)
    finally:
        db.execute(f"drop database {name} with (force)")


def test_pending_migrations_apply_once_in_order_and_are_recorded_as_the_cli_writes_them(
    project: Project,
) -> None:
    project.write("1_create.sql", "create table things (id int primary key);")
    project.write("2_fill.sql", "insert into things values (1), (2);")
    applied: list[str] = []

    project.cli.push(applied.append)
    project.cli.push(applied.append)

    assert applied == ["Applying migration 1_create.sql", "Applying migration 2_fill.sql"]
    assert project.db.execute("select count(*) from things").fetchone() == (2,)
    assert project.history() == [
        ("1", "create", ["create table things (id int primary key)"]),
        ("2", "fill", ["insert into things values (1), (2)"]),
    ]


def test_a_migration_older_than_the_applied_ones_is_still_applied(project: Project) -> None:
    project.write("20260102000000_second.sql", "create table second (id int);")
    project.cli.push()
    project.write("20260101000000_first.sql", "create table first (id int);")

    project.cli.push()

    assert [row[0] for row in project.history()] == ["20260101000000", "20260102000000"]
    assert project.tables() == {"first", "second"}


def test_a_failing_migration_leaves_nothing_behind_and_names_its_file_and_statement(project: Project) -> None:
    project.write("1_ok.sql", "create table kept (id int);")
    project.write(
        "2_broken.sql", "create table half_done (id int);\n\ninsert into missing_table values (1);\n"
    )

    with pytest.raises(SupabaseCliError) as failure:
        project.cli.push()

    message = str(failure.value)
    assert message.startswith("supabase db push failed: Applying migration 2_broken.sql")
    assert 'relation "missing_table" does not exist (SQLSTATE 42P01)' in message
    assert "insert into missing_table values (1)" in message
    assert project.tables() == {"kept"}
    assert [row[0] for row in project.history()] == ["1"]


def test_a_misnamed_migration_file_is_an_error_not_skipped(project: Project) -> None:
    project.write("add_things.sql", "create table things (id int);")

    with pytest.raises(
        SupabaseCliError, match=r"ignored a migration file: Skipping migration add_things\.sql"
    ):
        project.cli.push()


def test_two_files_with_one_version_fail_on_the_second(project: Project) -> None:
    project.write("20260101000000_a.sql", "create table a (id int);")
    project.write("20260101000000_b.sql", "create table b (id int);")

    with pytest.raises(SupabaseCliError) as failure:
        project.cli.push()

    assert "Applying migration 20260101000000_b.sql" in str(failure.value)
    assert "Key (version)=(20260101000000) already exists" in str(failure.value)
    assert project.tables() == {"a"}


def test_the_seed_runs_once_and_is_recorded_by_its_project_path_and_hash(project: Project) -> None:
    project.write("1_create.sql", "create table visits (id serial primary key);")
    project.seed.write_text("insert into visits default values;\n")

    project.cli.push()
    project.cli.push()

    seeds = project.db.execute("select path, hash from supabase_migrations.seed_files").fetchall()
    assert seeds == [("supabase/seed.sql", hashlib.sha256(project.seed.read_bytes()).hexdigest())]
    assert project.db.execute("select count(*) from visits").fetchone() == (1,)


def test_lint_names_each_broken_function_with_its_line(project: Project) -> None:
    project.write(
        "1_functions.sql",
        "create table things (id int);\n"
        "create function public.fine() returns int language plpgsql as $$\n"
        "begin\n  return (select count(*) from public.things);\nend $$;\n"
        "create function public.broken() returns int language plpgsql as $$\n"
        "begin\n  return (select missing_column from public.things);\nend $$;\n",
    )
    project.cli.push()

    findings = project.cli.lint()

    assert [(f.function, f.level, f.sql_state) for f in findings] == [("public.broken", "error", "42703")]
    assert findings[0].describe() == (
        'public.broken at line 3: error [42703]: column "missing_column" does not exist (in: RETURN)'
    )


def test_migration_list_shows_what_is_not_applied(project: Project) -> None:
    project.write("1_create.sql", "create table things (id int);")
    project.cli.push()
    project.write("2_more.sql", "create table more (id int);")

    assert project.cli.migration_list() == [HistoryRow("1", "1"), HistoryRow("2", None)]


def test_every_repository_migration_is_applied_to_the_stack(stack: DevStack) -> None:
    expected = sorted(path.name.split("_", 1)[0] for path in stack.config.migrations_dir.glob("*.sql"))

    rows = SupabaseCli(stack.config).migration_list()

    assert rows == [HistoryRow(version, version) for version in expected]
