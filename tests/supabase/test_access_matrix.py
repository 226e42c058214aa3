"""The attack matrix: every table, view and function PostgREST serves, found in the catalog, tried with every
verb as six credentials against one user's rows through the gateway; every Edge Function called as each; and
Realtime subscriptions of each credential while that user's rows change. The allowed list is
tests/supabase/access_matrix.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from realtime import AsyncRealtimeClient, RealtimePostgresChangesListenEvent

from devstack.stack import DevStack
from tests.factories import AppUser, create_machine, delete_user, machine_credential
from tests.supabase.access_matrix import (
    DB_ROLES,
    EDGE_FUNCTIONS,
    FUNCTIONS,
    RELATIONS,
    SIGNED_IN,
    Access,
    EdgeFunction,
    Function,
    Relation,
    Role,
)

ROOT = Path(__file__).resolve().parents[2]
API_ROLES = ("anon", "authenticated", "trader_machine")
VERBS = ("select", "insert", "update", "delete")
OTHERS = frozenset({Role.OTHER_USER, Role.OTHER_MACHINE})
PERMISSION_STATUSES = frozenset({401, 403})
NOT_UPDATABLE = "55000"  # a view Postgres cannot write through (nobody can)
IDS = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|tm[0-9a-f]{30}")


class Unexpected(AssertionError):
    """An attempt ended neither as a success nor as a refusal by the permission system."""


# The catalog --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Table:
    name: str
    kind: str  # r: table, v: view
    rls: bool
    security_invoker: bool
    primary_key: tuple[str, ...]
    types: dict[str, str]  # column -> type name
    generated: frozenset[str]  # identity or generated columns: the database fills them
    unique: tuple[tuple[str, ...], ...]  # every full (not partial) unique index but the primary key


def served_tables(db: psycopg.Connection[Any], schemas: list[str]) -> dict[str, Table]:
    rows = db.execute(
        """
        select c.oid, c.relname, c.relkind, c.relrowsecurity,
               coalesce('security_invoker=true' = any(c.reloptions), false)
          from pg_class c join pg_namespace n on n.oid = c.relnamespace
         where n.nspname = any(%s) and c.relkind in ('r', 'p', 'v', 'm', 'f')
        """,
        (schemas,),
    ).fetchall()
    tables = {}
    for oid, name, kind, rls, invoker in rows:
        columns = db.execute(
            "select attname, atttypid::regtype::text, attidentity <> '' or attgenerated <> ''"
            " from pg_attribute where attrelid = %s and attnum > 0 and not attisdropped",
            (oid,),
        ).fetchall()
        indexes = db.execute(
            "select i.indisprimary,"
            " array(select a.attname from unnest(i.indkey) with ordinality k(attnum, ord)"
            " join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.attnum order by k.ord)"
            " from pg_index i where i.indrelid = %s and i.indisunique and i.indpred is null"
            " and 0 <> all(i.indkey::int2[])",
            (oid,),
        ).fetchall()
        tables[name] = Table(
            name, kind, rls, invoker,
            next((tuple(cols) for primary, cols in indexes if primary), ()),
            {column: type_name for column, type_name, _ in columns},
            frozenset(column for column, _, generated in columns if generated),
            tuple(tuple(cols) for primary, cols in indexes if not primary),
        )  # fmt: skip
    return tables


def served_functions(db: psycopg.Connection[Any], schemas: list[str]) -> dict[str, frozenset[str]]:
    """Each function's identity signature -> the API roles that may execute it."""
    with db.transaction():
        db.execute("set local search_path = public")
        rows = db.execute(
            "select p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',"
            " array(select r from unnest(%s::text[]) r where has_function_privilege(r, p.oid, 'EXECUTE'))"
            " from pg_proc p join pg_namespace n on n.oid = p.pronamespace"
            " where n.nspname = any(%s) and p.prokind = 'f'",
            (list(API_ROLES), schemas),
        ).fetchall()
    return {signature: frozenset(roles) for signature, roles in rows}


def privileges(db: psycopg.Connection[Any], table: str, role: str, verb: str) -> Access | None:
    """What `role` holds for `verb` on `table`: None, the whole table, or some columns."""
    privilege = verb.upper()
    whole, columns = db.execute(
        "select has_table_privilege(%s, c.oid, %s), array(select a.attname from pg_attribute a"
        "  where a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped"
        "    and %s <> 'DELETE' and has_column_privilege(%s, c.oid, a.attnum, %s) order by a.attname)"
        " from pg_class c where c.oid = ('public.' || quote_ident(%s))::regclass",
        (role, privilege, privilege, role, privilege, table),
    ).fetchone()
    if whole:
        return Access()
    return Access(columns=tuple(columns)) if columns else None


def _describe(access: Access | None) -> str:
    if access is None:
        return "nothing"
    return "the whole table" if access.columns is None else f"columns {', '.join(access.columns)}"


def expected_privileges(access: Access, role: str) -> Access | None:
    if not any(DB_ROLES[r] == role for r in access.roles):
        return None
    return Access(columns=tuple(sorted(access.columns)) if access.columns is not None else None)


# The world: two users with a row in every table, and the six credentials -------------------------------
@dataclass
class World:
    db: psycopg.Connection[Any]
    api_url: str
    anon_key: str
    alice: AppUser
    bob: AppUser
    tokens: dict[Role, str]
    rows: dict[str, dict[str, Any]]  # alice's sample row of each relation
    values: dict[str, str]  # placeholders: alice's ids

    def headers(self, role: Role) -> dict[str, str]:
        return {"apikey": self.anon_key, "Authorization": f"Bearer {self.tokens[role]}"}


def _create_samples(db: psycopg.Connection[Any], user: AppUser, machine_id: str, shared: bool) -> tuple[
    dict[str, dict[str, Any]], dict[str, str]
]:  # fmt: skip
    values = {"owner": str(user.id), "machine_id": machine_id}
    rows: dict[str, dict[str, Any]] = {}
    for name, relation in RELATIONS.items():
        if relation.owner is None and not shared:
            continue
        found = db.execute(
            f"with sample as ({relation.sample}) select to_jsonb(sample) from sample", values
        ).fetchone()
        assert found is not None, f"the sample of {name} made no row"
        rows[name] = found[0]
        if "id" in found[0]:
            values[name] = str(found[0]["id"])
    return rows, values


def _sign_up(http: httpx.Client) -> tuple[AppUser, str]:
    """A user signed up through the Auth stand-in as an app does; the user and its session's access token."""
    email = f"matrix-{uuid.uuid4().hex[:12]}@example.com"
    # a lower and an upper case letter and a digit whatever the random part holds (the password rule)
    password = secrets.token_urlsafe(16) + "Aa1"
    response = http.post("/auth/v1/signup", json={"email": email, "password": password})
    assert response.status_code == 200, response.text
    session = response.json()
    return AppUser(uuid.UUID(session["user"]["id"]), email), session["access_token"]


def _machine_token(http: httpx.Client, machine_id: str) -> str:
    """The token the machine-token function gives a machine that presents its credential (the worker's
    renewal)."""
    response = http.post(
        "/functions/v1/machine-token",
        json={"machineId": machine_id},
        headers={"Authorization": f"Bearer {machine_credential(machine_id)}"},
    )
    assert response.status_code == 200, response.text
    return str(response.json()["token"])


@pytest.fixture(scope="module")
def world(stack: DevStack) -> Iterator[World]:
    """Alice and bob signed up, each with a live machine and a row in every table, and an earlier machine of
    alice's that got its token and was then destroyed (its row marked as destroy-machine marks it). One world
    per module: the attempts put back what they change, and the Auth stand-in limits sign-ups."""
    api_url, anon_key = stack.config.api_url, stack.config.anon_key
    with (
        stack.postgres.connect(autocommit=True) as db,
        httpx.Client(base_url=api_url, headers={"apikey": anon_key}, timeout=30) as http,
    ):
        (alice, alice_session), (bob, bob_session) = _sign_up(http), _sign_up(http)
        try:
            # Subscribed (machines are for pro and above), as the billing webhook records it.
            db.execute("update public.users set tier = 'pro' where id = any(%s)", ([alice.id, bob.id],))
            destroyed = create_machine(db, alice)
            destroyed_token = _machine_token(http, destroyed)
            db.execute(
                "update public.fly_machines set status = 'destroyed', destroyed_at = now()"
                " where machine_id = %s",
                (destroyed,),
            )
            alice_machine, bob_machine = create_machine(db, alice), create_machine(db, bob)
            tokens: dict[Role, str] = {
                Role.ANON: anon_key,  # as supabase-js sends it without a session
                Role.USER: alice_session,
                Role.OTHER_USER: bob_session,
                Role.MACHINE: _machine_token(http, alice_machine),
                Role.OTHER_MACHINE: _machine_token(http, bob_machine),
                Role.DESTROYED_MACHINE: destroyed_token,
            }
            rows, values = _create_samples(db, alice, alice_machine, shared=True)
            _create_samples(db, bob, bob_machine, shared=False)
            yield World(db, api_url, anon_key, alice, bob, tokens, rows, values)
        finally:
            delete_user(db, alice)
            delete_user(db, bob)
            db.execute("delete from public.operator_alerts where subject like 'matrix-%'")


# Catalog checks -----------------------------------------------------------------------------------------
def entry_problems(
    db: psycopg.Connection[Any],
    schemas: list[str],
    relations: Mapping[str, Relation],
    functions: Mapping[str, Function],
) -> list[str]:
    """Served tables, views and functions without an entry, and entries for what is not served."""
    tables, served = set(served_tables(db, schemas)), set(served_functions(db, schemas))
    return [
        *(
            f"{name}: served without an entry in access_matrix.RELATIONS"
            for name in sorted(tables - set(relations))
        ),
        *(
            f"{name}: an entry for a relation PostgREST does not serve"
            for name in sorted(set(relations) - tables)
        ),
        *(
            f"{name}: served without an entry in access_matrix.FUNCTIONS"
            for name in sorted(served - set(functions))
        ),
        *(
            f"{name}: an entry for a function PostgREST does not serve"
            for name in sorted(set(functions) - served)
        ),
    ]


def grant_problems(
    db: psycopg.Connection[Any],
    schemas: list[str],
    relations: Mapping[str, Relation],
    functions: Mapping[str, Function],
) -> list[str]:
    """Privileges the API roles hold that the entries do not give them (or lack that they do), tables without
    RLS and views that run with their owner's rights."""
    tables, wrong = served_tables(db, schemas), []
    for name, relation in relations.items():
        for verb in VERBS:
            access: Access = getattr(relation, verb)
            for role in API_ROLES:
                held, allowed = privileges(db, name, role, verb), expected_privileges(access, role)
                if held != allowed:
                    wrong.append(
                        f"{name} {verb} {role}: holds {_describe(held)},"
                        f" the matrix allows {_describe(allowed)}"
                    )
        for role in API_ROLES:
            for privilege in ("TRUNCATE", "REFERENCES", "TRIGGER"):
                held = db.execute(
                    "select has_table_privilege(%s, %s, %s)", (role, f"public.{name}", privilege)
                ).fetchone()
                if held and held[0]:
                    wrong.append(f"{name} {privilege} {role}: held (TRUNCATE ignores RLS)")
    served = served_functions(db, schemas)
    for signature, function in functions.items():
        allowed_roles = frozenset(DB_ROLES[r] for r in function.callers)
        if signature in served and served[signature] != allowed_roles:
            wrong.append(
                f"{signature}: executable by {sorted(served[signature])}, allowed {sorted(allowed_roles)}"
            )
    for table in tables.values():
        if table.kind == "r" and not table.rls:
            wrong.append(f"{table.name}: a table without row level security")
        if table.kind == "v" and not table.security_invoker:
            wrong.append(f"{table.name}: a view that runs with its owner's rights")
    return wrong


def test_every_served_table_view_and_function_has_an_entry(
    stack: DevStack, db: psycopg.Connection[Any]
) -> None:
    assert entry_problems(db, list(stack.config.api_schemas), RELATIONS, FUNCTIONS) == []


def test_grants_are_exactly_what_the_matrix_allows(stack: DevStack, db: psycopg.Connection[Any]) -> None:
    assert grant_problems(db, list(stack.config.api_schemas), RELATIONS, FUNCTIONS) == []


def test_a_new_table_view_column_grant_or_function_without_an_entry_is_reported(
    stack: DevStack, db: psycopg.Connection[Any]
) -> None:
    """The checks above fail on what a migration could add: made in a transaction that is rolled back (so
    PostgREST and the other tests never see it) and checked on the same connection."""
    schemas = list(stack.config.api_schemas)
    with db.transaction(force_rollback=True):
        db.execute("create table public.matrix_scratch (id uuid primary key)")
        db.execute("grant select on public.matrix_scratch to authenticated")
        db.execute("create view public.matrix_scratch_view as select id from public.users")
        db.execute("create function public.matrix_scratch_fn() returns int language sql as 'select 1'")
        db.execute("grant update (balance_usd) on public.paper_accounts to trader_machine")
        db.execute("grant execute on function public.decrypt_binance_keys(uuid) to authenticated")
        entries = entry_problems(db, schemas, RELATIONS, FUNCTIONS)
        grants = grant_problems(db, schemas, RELATIONS, FUNCTIONS)

    assert entries == [
        "matrix_scratch: served without an entry in access_matrix.RELATIONS",
        "matrix_scratch_view: served without an entry in access_matrix.RELATIONS",
        "matrix_scratch_fn(): served without an entry in access_matrix.FUNCTIONS",
    ]
    assert sorted(grants) == sorted([
        "paper_accounts update trader_machine: holds columns balance_usd, the matrix allows nothing",
        "decrypt_binance_keys(user_id uuid): executable by ['authenticated'], allowed []",
        "matrix_scratch: a table without row level security",
        "matrix_scratch_view: a view that runs with its owner's rights",
    ])  # fmt: skip
    assert entry_problems(db, schemas, RELATIONS, FUNCTIONS) == [], "the scratch objects are gone"


def test_postgrest_serves_no_other_schema(stack: DevStack, db: psycopg.Connection[Any]) -> None:
    schemas = [
        row[0]
        for row in db.execute(
            "select nspname from pg_namespace where nspname <> all(%s) and nspname not like 'pg\\_%%'"
            " and nspname <> 'information_schema'",
            (list(stack.config.api_schemas),),
        ).fetchall()
    ]
    key = stack.config.service_role_key
    headers = {"apikey": key, "Authorization": f"Bearer {key}"}
    answers = {
        schema: httpx.post(
            f"{stack.config.api_url}/rest/v1/rpc/apply_fill",
            json={},
            headers={**headers, "Content-Profile": schema},
        ).status_code
        for schema in schemas
    }

    assert {"private", "transitions", "request_hooks", "auth", "vault"} <= set(answers)
    assert answers == dict.fromkeys(schemas, 406), "even the service role reaches no unexposed schema"


# Tables and views: every verb as every role ---------------------------------------------------------------
def _filters(table: Table, relation: Relation, row: dict[str, Any]) -> dict[str, str]:
    keys = table.primary_key or ((relation.owner,) if relation.owner else ())
    return {column: f"eq.{row[column]}" for column in keys}


def _where(table: Table, row: dict[str, Any]) -> tuple[str, list[Any]]:
    return " and ".join(f"{c}::text = %s" for c in table.primary_key), [
        str(row[c]) for c in table.primary_key
    ]


def _exists(db: psycopg.Connection[Any], table: Table, row: dict[str, Any]) -> bool:
    where, args = _where(table, row)
    return db.execute(f"select exists (select from public.{table.name} where {where})", args).fetchone()[0]


def _insert(db: psycopg.Connection[Any], table: Table, row: dict[str, Any]) -> None:
    columns = ", ".join(row)
    db.execute(
        f"insert into public.{table.name} ({columns}) overriding system value"
        f" select {columns} from jsonb_populate_record(null::public.{table.name}, %s::jsonb)",
        (json.dumps(row),),
    )


def _delete(db: psycopg.Connection[Any], table: Table, row: dict[str, Any]) -> None:
    where, args = _where(table, row)
    db.execute(f"delete from public.{table.name} where {where}", args)


def _fresh_copy(table: Table, relation: Relation, row: dict[str, Any]) -> dict[str, Any] | None:
    """`row` with a new primary key and new values for unique columns; None when the row is the owner's only
    one (its key is the owner) or no new value can be made."""
    if set(table.primary_key) & table.generated:
        return None  # the database numbers its rows: a copy could not be found again
    copy = {column: value for column, value in row.items() if column not in table.generated}
    renewed: set[str] = set()
    for key in (table.primary_key, *table.unique):
        if not key or renewed & set(key):
            continue
        column = next((c for c in key if c != relation.owner and table.types[c] in ("uuid", "text")), None)
        if column is None:
            return None
        copy[column] = str(uuid.uuid4()) if table.types[column] == "uuid" else f"tm{uuid.uuid4().hex[:30]}"
        renewed.add(column)
    return copy


def _refused(response: httpx.Response, *, view: bool = False) -> bool:
    if response.status_code in PERMISSION_STATUSES:
        return True
    if response.is_success:
        return False
    if view and response.json().get("code") == NOT_UPDATABLE:
        return True
    raise Unexpected(f"HTTP {response.status_code}: {response.text[:300]}")


@dataclass(frozen=True)
class Aim:
    """What an attempt aims at: alice's row of one relation, through one HTTP client."""

    world: World
    http: httpx.Client
    table: Table
    relation: Relation

    @property
    def row(self) -> dict[str, Any]:
        return self.world.rows[self.table.name]

    def headers(self, role: Role) -> dict[str, str]:
        return {**self.world.headers(role), "Prefer": "return=minimal"}


def _try_select(aim: Aim, role: Role) -> bool:
    filters = {"select": "*", **_filters(aim.table, aim.relation, aim.row)}
    response = aim.http.get(f"/{aim.table.name}", params=filters, headers=aim.world.headers(role))
    return not _refused(response) and bool(response.json())


def _try_view_write(aim: Aim, verb: str, role: Role) -> bool:
    method = {"insert": "POST", "update": "PATCH", "delete": "DELETE"}[verb]
    filters = _filters(aim.table, aim.relation, aim.row) if verb != "insert" else {}
    body = aim.row if verb != "delete" else None
    response = aim.http.request(
        method, f"/{aim.table.name}", params=filters, json=body, headers=aim.headers(role)
    )
    return not _refused(response, view=True)


def _key_text(table: Table) -> str:
    return f"row({', '.join(f'{column}::text' for column in table.primary_key)})::text"


def _owned(db: psycopg.Connection[Any], table: Table, relation: Relation, row: dict[str, Any]) -> set[str]:
    """The primary keys (as text) of the rows of `table` that belong to `row`'s owner."""
    found = db.execute(
        f"select {_key_text(table)} from public.{table.name} where {relation.owner}::text = %s",
        (str(row[relation.owner or ""]),),
    )
    return {value for (value,) in found.fetchall()}


def _try_insert(aim: Aim, role: Role) -> bool:
    db, table, row, access = aim.world.db, aim.table, aim.row, aim.relation.insert
    copy = _fresh_copy(table, aim.relation, row)
    singleton = copy is None
    body = {column: value for column, value in (copy or row).items() if column not in table.generated}
    if access.columns is not None:
        body = {column: body[column] for column in access.columns if column in body}
    if not set(table.primary_key) <= set(body):
        return _try_keyless_insert(aim, role, body)
    if singleton and access.roles:
        _delete(db, table, row)  # the owner's only row: make room for the attempt, put it back after
    try:
        response = aim.http.post(f"/{table.name}", json=body, headers=aim.headers(role))
        done = not _refused(response)
        if done and not _exists(db, table, body if not singleton else row):
            raise Unexpected(f"insert answered {response.status_code} but stored nothing")
        if done and not singleton:
            _delete(db, table, body)
    finally:
        if singleton and access.roles:
            _delete(db, table, row)
            _insert(db, table, row)
    return done


def _try_keyless_insert(aim: Aim, role: Role, body: dict[str, Any]) -> bool:
    """An insert whose key the database sets: what is new among the owner's rows is what it stored."""
    db, table = aim.world.db, aim.table
    before = _owned(db, table, aim.relation, aim.row)
    response = aim.http.post(f"/{table.name}", json=body, headers=aim.headers(role))
    done = not _refused(response)
    stored = _owned(db, table, aim.relation, aim.row) - before
    if done and not stored:
        raise Unexpected(f"insert answered {response.status_code} but stored nothing")
    for key in stored:
        db.execute(f"delete from public.{table.name} where {_key_text(table)} = %s", (key,))
    return done


def _try_update(aim: Aim, role: Role) -> bool:
    db, table, row = aim.world.db, aim.table, aim.row
    columns = aim.relation.update.columns or tuple(
        c for c in row if c not in table.primary_key and c not in table.generated
    )
    where, args = _where(table, row)
    version = f"select xmin::text from public.{table.name} where {where}"
    before = db.execute(version, args).fetchone()
    response = aim.http.patch(
        f"/{table.name}",
        params=_filters(table, aim.relation, row),
        json={c: row[c] for c in columns},
        headers=aim.headers(role),
    )
    return not _refused(response) and before != db.execute(version, args).fetchone()


def _try_delete(aim: Aim, role: Role) -> bool:
    db, table, row = aim.world.db, aim.table, aim.row
    target = _fresh_copy(table, aim.relation, row)
    if target is not None:
        try:
            with db.transaction():
                _insert(db, table, target)
        except psycopg.errors.IntegrityError:
            target = None  # the copy breaks a rule of the table: aim at the row itself
    aimed = target or row
    try:
        params = _filters(table, aim.relation, aimed)
        response = aim.http.delete(f"/{table.name}", params=params, headers=aim.headers(role))
        return not _refused(response) and not _exists(db, table, aimed)
    finally:
        if target is not None:
            _delete(db, table, target)
        elif not _exists(db, table, row):
            _insert(db, table, row)


def _attempt(aim: Aim, verb: str, role: Role) -> bool:
    """True when `role` did `verb` to alice's row, False when it was refused."""
    if verb == "select":
        return _try_select(aim, role)
    if aim.table.kind != "r":
        return _try_view_write(aim, verb, role)
    return {"insert": _try_insert, "update": _try_update, "delete": _try_delete}[verb](aim, role)


def relation_problems(
    world: World, relations: Mapping[str, Relation], schemas: list[str]
) -> tuple[list[str], int]:
    """Every verb on alice's row of every relation as every role: the attempts that did not end as `relations`
    allow, and how many attempts were made."""
    tables = served_tables(world.db, schemas)
    outside, attempts = [], 0
    with httpx.Client(base_url=f"{world.api_url}/rest/v1", timeout=30) as http:
        for name, relation in relations.items():
            for verb in VERBS:
                allowed = getattr(relation, verb).roles
                for role in Role:
                    attempts += 1
                    try:
                        done = _attempt(Aim(world, http, tables[name], relation), verb, role)
                    except Unexpected as error:
                        outside.append(f"{name} {verb} as {role}: {error}")
                        continue
                    if done != (role in allowed):
                        outside.append(f"{name} {verb} as {role}: {'done' if done else 'refused'}")
    return outside, attempts


def test_every_verb_on_every_table_and_view_as_every_role_does_only_what_the_matrix_allows(
    stack: DevStack, world: World
) -> None:
    started = time.monotonic()
    outside, attempts = relation_problems(world, RELATIONS, list(stack.config.api_schemas))

    print(
        f"access matrix: {len(RELATIONS)} tables and views x {len(VERBS)} verbs x {len(Role)} roles"
        f" = {attempts} attempts in {time.monotonic() - started:.1f} s"
    )
    assert outside == [], "operations outside the allowed list:\n" + "\n".join(outside)


# Functions: every one as every role -------------------------------------------------------------------------
def _fill(value: Any, values: dict[str, str]) -> Any:
    if isinstance(value, str):
        return value.format_map(values)
    if isinstance(value, dict):
        return {key: _fill(item, values) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, values) for item in value]
    return value


def _strangers(values: dict[str, str]) -> dict[str, str]:
    """The same placeholders with every id of alice's replaced by one nobody has."""
    return {
        key: IDS.sub(lambda m: str(uuid.uuid4()) if "-" in m.group() else f"tm{uuid.uuid4().hex[:30]}", value)
        for key, value in values.items()
    }


def _answer(response: httpx.Response) -> tuple[int, str, str]:
    body = response.json() if response.content else {}
    body = body if isinstance(body, dict) else {}
    return response.status_code, str(body.get("code")), IDS.sub("<id>", str(body.get("message")))


def _call(world: World, http: httpx.Client, signature: str, function: Function, role: Role) -> list[str]:
    """Call as `role`; what was outside the allowed list."""
    values = dict(world.values)
    if function.setup:
        cursor = world.db.execute(function.setup, values)
        made = cursor.fetchone()
        assert made is not None and cursor.description is not None, f"the setup of {signature} made no row"
        values |= {column.name: str(value) for column, value in zip(cursor.description, made, strict=True)}
    name = signature.partition("(")[0]
    response = http.post(f"/rpc/{name}", json=_fill(function.args, values), headers=world.headers(role))
    allowed = role in function.callers
    if response.is_success != allowed:
        return [f"{signature} as {role}: HTTP {response.status_code} {response.text[:200]}"]
    problems = []
    if response.is_success and role in OTHERS and str(world.alice.id) in response.text:
        problems.append(f"{signature} as {role}: the answer names alice")
    if not response.is_success and role in OTHERS and response.status_code not in PERMISSION_STATUSES:
        stranger = http.post(
            f"/rpc/{name}", json=_fill(function.args, _strangers(values)), headers=world.headers(role)
        )
        if _answer(stranger) != _answer(response):
            problems.append(
                f"{signature} as {role}: alice's ids answer {_answer(response)},"
                f" unknown ids {_answer(stranger)}"
            )
    return problems


def function_problems(world: World, functions: Mapping[str, Function]) -> list[str]:
    """Every function as every role: the calls that did not end as `functions` allow."""
    outside = []
    with httpx.Client(base_url=f"{world.api_url}/rest/v1", timeout=30) as http:
        for signature, function in functions.items():
            # Refusals first, so a caller's success cannot change what the others are refused.
            for role in sorted(Role, key=lambda r: r in function.callers):
                outside += _call(world, http, signature, function, role)
    return outside


def test_every_function_as_every_role_answers_only_its_callers_and_tells_nothing_of_others_ids(
    world: World,
) -> None:
    started = time.monotonic()
    outside = function_problems(world, FUNCTIONS)

    print(
        f"access matrix: {len(FUNCTIONS)} functions x {len(Role)} roles = {len(FUNCTIONS) * len(Role)} calls"
        f" in {time.monotonic() - started:.1f} s"
    )
    assert outside == [], "calls outside the allowed list:\n" + "\n".join(outside)


def test_an_operation_outside_the_allowed_list_is_reported(stack: DevStack, world: World) -> None:
    """The same attempts against entries that allow less (or more) than the stack does fail, naming the
    operation: the matrix is not passing because its attempts cannot succeed or cannot be refused."""
    relations = {
        "users": dataclasses.replace(RELATIONS["users"], select=Access(frozenset({Role.USER}))),
        "notifications": dataclasses.replace(
            RELATIONS["notifications"], update=Access(frozenset({Role.USER, Role.MACHINE}), ("read_at",))
        ),
    }
    functions = {
        "schema_version()": dataclasses.replace(
            FUNCTIONS["schema_version()"], callers=frozenset({Role.USER})
        ),
        "trading_paper_balance()": dataclasses.replace(
            FUNCTIONS["trading_paper_balance()"], callers=frozenset({Role.MACHINE, Role.DESTROYED_MACHINE})
        ),
    }

    # (Never an entry that stops listing the user for destroy-machine: the probe would destroy her machine.)
    edge_functions = {
        "ask": dataclasses.replace(EDGE_FUNCTIONS["ask"], callers=SIGNED_IN | {Role.MACHINE}),
        "check-machine-health": dataclasses.replace(
            EDGE_FUNCTIONS["check-machine-health"], callers=frozenset()
        ),
    }

    outside, _ = relation_problems(world, relations, list(stack.config.api_schemas))
    calls = function_problems(world, functions)
    edge_calls = edge_function_problems(world, edge_functions)

    assert outside == [
        "users select as machine: done",
        "notifications update as machine: refused",
    ]
    assert sorted(call.partition(": ")[0] for call in calls) == [
        "schema_version() as machine",
        "schema_version() as other_machine",
        "schema_version() as other_user",
        "trading_paper_balance() as destroyed_machine",
        "trading_paper_balance() as other_machine",
    ]
    assert [call.partition(": ")[0] for call in edge_calls] == [
        "ask as machine",
        "check-machine-health as user",
    ]


# Edge Functions: every one as every role ----------------------------------------------------------------
def served_edge_functions(stack: DevStack) -> set[str]:
    return {path.parent.name for path in stack.config.functions_dir.glob("*/index.ts")}


def _error_shaped(response: httpx.Response) -> bool:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
    )


def edge_function_problems(world: World, functions: Mapping[str, EdgeFunction]) -> list[str]:
    """Every Edge Function as every role: the answers outside what `functions` allow."""
    outside = []
    with httpx.Client(base_url=f"{world.api_url}/functions/v1", timeout=60) as http:
        for name, function in functions.items():
            for role in Role:
                if role in function.callers and function.callers_shown_in:
                    continue
                response = http.post(
                    f"/{name}", json=_fill(function.probe, world.values), headers=world.headers(role)
                )
                refused = response.status_code in PERMISSION_STATUSES
                answer = f"{name} as {role}: HTTP {response.status_code} {response.text[:200]}"
                if response.status_code >= 500 or refused == (role in function.callers):
                    outside.append(answer)
                elif not response.is_success and not _error_shaped(response):
                    outside.append(f"{answer} (not an {{error: {{code, message}}}} body)")
    return outside


def test_every_edge_function_as_every_role_answers_only_its_callers(stack: DevStack, world: World) -> None:
    served = served_edge_functions(stack)
    started = time.monotonic()
    outside = edge_function_problems(world, EDGE_FUNCTIONS)

    print(
        f"access matrix: {len(EDGE_FUNCTIONS)} Edge Functions x {len(Role)} roles"
        f" = {len(EDGE_FUNCTIONS) * len(Role)} calls in {time.monotonic() - started:.1f} s"
    )
    assert sorted(served ^ set(EDGE_FUNCTIONS)) == [], (
        "Edge Functions without an entry, or entries without one"
    )
    for name, function in EDGE_FUNCTIONS.items():
        shown_in = function.callers_shown_in
        assert shown_in is None or name in (ROOT / shown_in).read_text(), f"{shown_in} does not call {name}"
    assert outside == [], "calls outside the allowed list:\n" + "\n".join(outside)


# Realtime: each role subscribed while alice's rows change ---------------------------------------------
async def test_realtime_delivers_alices_changes_only_to_the_roles_that_may_read_them(
    stack: DevStack, world: World
) -> None:
    published = [
        row[0]
        for row in world.db.execute(
            "select tablename from pg_publication_tables where pubname = 'supabase_realtime'"
            " and schemaname = 'public' order by tablename"
        ).fetchall()
    ]
    tables = served_tables(world.db, list(stack.config.api_schemas))
    alices: dict[str, set[str]] = {name: {str(world.rows[name]["id"])} for name in published}
    seen: dict[Role, list[tuple[str, str, str]]] = {role: [] for role in Role}
    joined: dict[Role, asyncio.Event] = {role: asyncio.Event() for role in Role}
    clients = []

    def on_change(role: Role) -> Any:
        def record(payload: dict[str, Any]) -> None:
            data = payload["data"]
            row = data.get("record") or data.get("old_record") or {}
            seen[role].append((data["table"], data["type"].value, str(row.get("id"))))

        return record

    try:
        for role in Role:
            client = AsyncRealtimeClient(f"{world.api_url}/realtime/v1", token=world.anon_key)
            clients.append(client)
            await client.connect()
            await client.set_auth(world.tokens[role])
            channel = client.channel(f"matrix-{role}-{uuid.uuid4().hex[:8]}")
            for name in published:
                channel.on_postgres_changes(
                    RealtimePostgresChangesListenEvent.All, on_change(role), table=name, schema="public"
                )
            channel.on_system(lambda _, event=joined[role]: event.set())
            await channel.subscribe(lambda _state, _error, event=joined[role]: event.set())
        await asyncio.wait_for(asyncio.gather(*(event.wait() for event in joined.values())), 10)
        await asyncio.sleep(0.5)  # a join's system message can come before its subscriptions are live

        for name in published:
            table, row = tables[name], world.rows[name]
            copy = _fresh_copy(table, RELATIONS[name], row)
            if copy is not None:
                try:
                    with world.db.transaction():
                        _insert(world.db, table, copy)
                    alices[name].add(str(copy["id"]))
                except psycopg.errors.IntegrityError:
                    copy = None  # the copy breaks a rule of the table (fly_machines: one live machine a user)
            where, args = _where(table, row)
            key = table.primary_key[0]
            world.db.execute(f"update public.{name} set {key} = {key} where {where}", args)
            if copy is not None:
                _delete(world.db, table, copy)
        readers = {name: RELATIONS[name].select.roles for name in published}
        started = time.monotonic()
        while any(
            not any(
                t == name and kind == "UPDATE" and row_id in alices[name] for t, kind, row_id in seen[role]
            )
            for name in published
            for role in readers[name]
        ):
            assert time.monotonic() - started < 10, {role: seen[role] for role in (Role.USER, Role.MACHINE)}
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # what a refused role would get comes with the readers' deliveries
    finally:
        for client in clients:
            await client.close()

    leaks = [
        (role, change)
        for role in Role
        for change in seen[role]
        if change[2] in alices[change[0]] and role not in readers[change[0]]
    ]
    missed = [
        (role, name)
        for name in published
        for role in readers[name]
        if not any(t == name for t, _, _ in seen[role])
    ]
    assert leaks == [], "a change of alice's rows reached a role that may not read them"
    assert missed == []
