"""The worker's StrEnums and the database's enums are the same sets, in the same order."""

from __future__ import annotations

from typing import Any

import psycopg

from worker.domain.enums import POSTGRES_ENUMS


def test_every_postgres_enum_in_public_is_mirrored(db: psycopg.Connection[Any]) -> None:
    rows = db.execute(
        "select t.typname from pg_type t join pg_namespace n on n.oid = t.typnamespace"
        " where n.nspname = 'public' and t.typtype = 'e'"
    ).fetchall()

    assert {name for (name,) in rows} == set(POSTGRES_ENUMS)


def test_enum_values_match_postgres_labels(db: psycopg.Connection[Any]) -> None:
    for type_name, enum in POSTGRES_ENUMS.items():
        labels = db.execute(
            "select enumlabel from pg_enum where enumtypid = %s::regtype order by enumsortorder",
            (f"public.{type_name}",),
        ).fetchall()

        assert [label for (label,) in labels] == [member.value for member in enum], type_name
