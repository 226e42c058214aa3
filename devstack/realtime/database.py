"""What the Realtime server asks Postgres: the catalog, typed row encoding, and RLS checks as the subscriber.

Rows are encoded the way the real server encodes them: the WAL image is cast to the table's row type
(`jsonb_populate_record`) and rendered with `to_jsonb`, so arrays, jsonb, numerics and timestamps come out
exactly as supabase/realtime sends them. Visibility is decided in Postgres under the subscriber's role and
claims (`set_config('role', ...)`, `request.jwt.claims`), as `realtime.apply_rls` does:
- INSERT and UPDATE: the row is selected by primary key, so every policy applies unchanged.
- DELETE: the row is gone, so the table's SELECT policies for that role are evaluated on the old image
  (the real server skips the check and sends only the primary key; we never tell one user about another
  user's rows, so a DELETE is delivered only when the old image passes the policies).
Every check for a batch of changes runs in one transaction, pipelined, and fails closed. It runs once the
batch's transactions are visible to new snapshots: the walsender sends a commit as soon as its WAL record is
flushed, a moment before the committing backend leaves the proc array, and a row looked up in that moment is
not there yet (its change would be refused to every subscriber: lost, seen under load).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from devstack.realtime.bindings import BindingError, FilterSpec, RowFilter, order_key_for
from devstack.realtime.tokens import Claims
from devstack.realtime.wal import DatabaseAddress, WalChange

logger = logging.getLogger(__name__)

PUBLICATION = "supabase_realtime"
CATALOG_TTL_SECS = 2.0
CHECK_TIMEOUT_MS = 5000
# How long a batch waits for its transactions to be visible (then it is checked anyway), polling this often.
VISIBLE_WAIT_SECS = 2.0
_VISIBLE_POLL_SECS = 0.002
# Whether every 32-bit xid of the WAL is finished for a new snapshot: each xid gets the epoch of the
# snapshot's xmax (the one before it when it is above xmax's low bits: it wrapped before xmax did).
_ALL_VISIBLE = sql.SQL("""
select coalesce(bool_and(pg_visible_in_snapshot(
         ((div(s.xmax, 4294967296) - (x > mod(s.xmax, 4294967296))::int) * 4294967296 + x)::text::xid8,
         s.snap)), true)
  from (select snap, pg_snapshot_xmax(snap)::text::bigint as xmax from pg_current_snapshot() as snap) as s,
       unnest(%s::bigint[]) as x
""")
_JSON_TYPES = frozenset({"json", "jsonb"})


@dataclass(frozen=True, slots=True)
class ColumnInfo:
    name: str
    type_name: str  # pg_type.typname, what the real server puts in `columns`
    sql_type: str  # format_type(), usable in a cast
    category: str  # pg_type.typcategory
    enum_labels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TableInfo:
    schema: str
    name: str
    oid: int
    columns: tuple[ColumnInfo, ...]
    pk: tuple[str, ...]
    rls_enabled: bool

    @property
    def ident(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    def column(self, name: str) -> ColumnInfo | None:
        return next((column for column in self.columns if column.name == name), None)


@dataclass(frozen=True, slots=True)
class RoleAccess:
    """What one role may see of one table."""

    exists: bool
    bypass_rls: bool
    can_select_pk: bool
    hidden_columns: frozenset[str]
    # The table's SELECT policies for the role (permissive OR'd, restrictive AND'd); None: none apply.
    policy_predicate: str | None


@dataclass(slots=True)
class _Cached:
    value: Any
    loaded_monotonic: float


@dataclass
class EncodedChange:
    """A change rendered for the wire; `variants[h]` are (record, old_record) JSON texts for hidden set h."""

    change: WalChange
    new_row: dict[str, Any] | None  # parsed with Decimal, for filters
    old_row: dict[str, Any] | None
    variants: list[tuple[str | None, str | None]] = field(default_factory=list)


class Catalog:
    """Cached catalog lookups on a connection of its own (short TTL: migrations change things under us)."""

    def __init__(self, address: DatabaseAddress) -> None:
        self._address = address
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._cache: dict[tuple[Any, ...], _Cached] = {}

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _query(
        self, query: sql.Composed | sql.SQL | str, params: Sequence[Any] = ()
    ) -> list[tuple[Any, ...]]:
        async with self._lock:
            for attempt in (1, 2):
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        **self._address.connect_kwargs(), autocommit=True
                    )
                try:
                    return await (await self._conn.execute(query, params)).fetchall()
                except psycopg.OperationalError:
                    await self._conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise
            raise AssertionError("unreachable")

    async def _cached(self, key: tuple[Any, ...], load: Any, fresh: bool = False) -> Any:
        entry = self._cache.get(key)
        if not fresh and entry is not None and time.monotonic() - entry.loaded_monotonic < CATALOG_TTL_SECS:
            return entry.value
        value = await load()
        self._cache[key] = _Cached(value, time.monotonic())
        return value

    async def published_tables(self, *, fresh: bool = False) -> frozenset[tuple[str, str]]:
        async def load() -> frozenset[tuple[str, str]]:
            rows = await self._query(
                "select schemaname::text, tablename::text from pg_publication_tables where pubname = %s",
                (PUBLICATION,),
            )
            return frozenset((schema, table) for schema, table in rows)

        result: frozenset[tuple[str, str]] = await self._cached(("publication",), load, fresh)
        return result

    async def table(self, schema: str, name: str, *, fresh: bool = False) -> TableInfo | None:
        async def load() -> TableInfo | None:
            rows = await self._query(
                """
                select c.oid::int8, c.relrowsecurity, a.attname::text, t.typname::text,
                       format_type(a.atttypid, a.atttypmod), t.typcategory::text,
                       coalesce((select array_agg(e.enumlabel::text order by e.enumsortorder)
                                   from pg_enum e where e.enumtypid = t.oid), '{}'),
                       coalesce(a.attnum = any(i.indkey), false)
                  from pg_class c
                  join pg_namespace n on n.oid = c.relnamespace
                  join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
                  join pg_type t on t.oid = a.atttypid
                  left join pg_index i on i.indrelid = c.oid and i.indisprimary
                 where n.nspname = %s and c.relname = %s and c.relkind in ('r', 'p')
                 order by a.attnum
                """,
                (schema, name),
            )
            if not rows:
                return None
            return TableInfo(
                schema=schema,
                name=name,
                oid=rows[0][0],
                columns=tuple(ColumnInfo(r[2], r[3], r[4], r[5], tuple(r[6])) for r in rows),
                pk=tuple(r[2] for r in rows if r[7]),
                rls_enabled=bool(rows[0][1]),
            )

        result: TableInfo | None = await self._cached(("table", schema, name), load, fresh)
        return result

    async def role_access(self, role: str, table: TableInfo) -> RoleAccess:
        async def load() -> RoleAccess:
            roles = await self._query(
                "select rolbypassrls or rolsuper from pg_roles where rolname = %s", (role,)
            )
            if not roles:
                return RoleAccess(False, False, False, frozenset(), None)
            privileges = await self._query(
                """
                select a.attname::text, has_column_privilege(%s, a.attrelid, a.attnum, 'SELECT')
                  from pg_attribute a
                 where a.attrelid = %s and a.attnum > 0 and not a.attisdropped
                """,
                (role, table.oid),
            )
            visible = {name for name, allowed in privileges if allowed}
            policies = await self._query(
                """
                select pg_get_expr(p.polqual, p.polrelid), p.polpermissive
                  from pg_policy p
                 where p.polrelid = %s and p.polcmd in ('r', '*')
                   and (0::oid = any(p.polroles)
                        or exists (select from unnest(p.polroles) r where pg_has_role(%s, r, 'MEMBER')))
                """,
                (table.oid, role),
            )
            # A policy without USING cannot be evaluated on an image: a permissive one grants nothing and
            # a restrictive one denies everything (fail closed).
            permissive = [f"({expr})" for expr, is_permissive in policies if is_permissive and expr]
            restrictive = [
                f"({expr})" if expr else "false" for expr, is_permissive in policies if not is_permissive
            ]
            predicate = " and ".join([f"({' or '.join(permissive)})", *restrictive]) if permissive else None
            return RoleAccess(
                exists=True,
                bypass_rls=bool(roles[0][0]),
                can_select_pk=bool(table.pk) and all(column in visible for column in table.pk),
                hidden_columns=frozenset(column.name for column in table.columns) - visible,
                policy_predicate=predicate,
            )

        result: RoleAccess = await self._cached(("access", role, table.oid), load)
        return result

    async def request_refusal(self, claims: Claims) -> str | None:
        """What PostgREST's pre-request hook (pgrst.db_pre_request on authenticator) says to these claims.

        None when it lets them through (or there is no hook); else its message, as PostgREST answers a
        PT4xx it raises. The hook runs as PostgREST runs it: in a transaction, as the claims' role.
        """
        hook = await self._pre_request_hook()
        if hook is None:
            return None
        async with self._lock:
            for attempt in (1, 2):
                if self._conn is None or self._conn.closed:
                    self._conn = await psycopg.AsyncConnection.connect(
                        **self._address.connect_kwargs(), autocommit=True
                    )
                try:
                    async with self._conn.transaction(force_rollback=True):
                        await self._conn.execute(
                            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                            (claims.role, claims.claims_json),
                        )
                        await self._conn.execute(sql.SQL("select {}()").format(hook))
                    return None
                except psycopg.OperationalError:
                    await self._conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise
                except psycopg.Error as error:
                    # A PTxyz error is PostgREST's HTTP xyz; anything else fails closed as well.
                    return error.diag.message_primary or "the request was refused"
            raise AssertionError("unreachable")

    async def _pre_request_hook(self) -> sql.Identifier | None:
        async def load() -> sql.Identifier | None:
            rows = await self._query(
                """
                select substr(setting, length('pgrst.db_pre_request=') + 1)
                  from pg_db_role_setting s
                  join pg_roles r on r.oid = s.setrole
                 cross join unnest(s.setconfig) as setting
                 where r.rolname = 'authenticator' and setting like %s
                """,
                ("pgrst.db_pre_request=%",),
            )
            return sql.Identifier(*str(rows[0][0]).split(".")) if rows and rows[0][0] else None

        result: sql.Identifier | None = await self._cached(("pre_request",), load)
        return result

    async def row_filter(self, table: TableInfo, spec: FilterSpec) -> RowFilter:
        """Bind a filter to its column: cast each value to the column type as Postgres would."""
        column = table.column(spec.column)
        if column is None:
            raise BindingError(f"invalid column for filter {spec.column}")
        order_key = order_key_for(column.category, column.type_name, column.enum_labels)
        if spec.operator not in ("eq", "neq", "in") and order_key is None:
            raise BindingError(
                f"the dev server cannot order values of type {column.sql_type} (filter on {spec.column})"
            )
        try:
            rows = await self._query(
                sql.SQL("select to_jsonb(v::text::{})::text from unnest(%s::text[]) as v").format(
                    sql.SQL(column.sql_type)
                ),
                (list(spec.values),),
            )
        except psycopg.errors.DataError as error:
            raise BindingError(
                f"invalid value for filter on {spec.column}: {error.diag.message_primary}"
            ) from error
        values = tuple(json.loads(row[0], parse_float=Decimal) for row in rows)
        return RowFilter(spec.column, spec.operator, values, order_key)


class Authorizer:
    """Encode batches of changes and decide who may see them, on a connection of its own."""

    def __init__(self, address: DatabaseAddress) -> None:
        self._address = address
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await psycopg.AsyncConnection.connect(**self._address.connect_kwargs())
        return self._conn

    async def await_visible(self, changes: Sequence[WalChange]) -> None:
        """Return once every transaction of `changes` is visible to a new snapshot (or VISIBLE_WAIT_SECS)."""
        xids = sorted({change.xid for change in changes})
        conn = await self._connection()
        deadline = time.monotonic() + VISIBLE_WAIT_SECS
        while True:
            async with conn.transaction(force_rollback=True):
                row = await (await conn.execute(_ALL_VISIBLE, (xids,))).fetchone()
            if row is not None and row[0]:
                return
            if time.monotonic() > deadline:
                logger.warning("transactions not visible after %.1fs xids=%s", VISIBLE_WAIT_SECS, xids)
                return
            await asyncio.sleep(_VISIBLE_POLL_SECS)

    async def encode(
        self, table: TableInfo, changes: Sequence[WalChange], hidden_sets: Sequence[frozenset[str]]
    ) -> list[EncodedChange]:
        """Render each change's row images with to_jsonb; one variant per set of hidden columns."""
        json_columns = {column.name for column in table.columns if column.type_name in _JSON_TYPES}
        new_images = [_typed_image(change.new, json_columns) for change in changes]
        old_images = [_typed_image(change.old, json_columns) for change in changes]
        row = sql.SQL("jsonb_populate_record(null::{}, {})")
        new_row, old_row = row.format(table.ident, sql.SQL("c.n")), row.format(table.ident, sql.SQL("c.o"))
        if table.rls_enabled:
            # RLS tables get only the primary key in old_record (apply_rls), from whichever image has it.
            either = row.format(table.ident, sql.SQL("coalesce(c.o, c.n)"))
            old_payload: sql.Composable = sql.SQL(
                "(select jsonb_object_agg(k, v) from jsonb_each(to_jsonb({})) as e(k, v) where k = any({}))"
            ).format(either, sql.Literal(list(table.pk)))
        else:
            old_payload = sql.SQL("to_jsonb({})").format(old_row)
        selects: list[sql.Composable] = [
            sql.SQL("to_jsonb({})::text").format(new_row),
            sql.SQL("to_jsonb({})::text").format(old_row),
        ]
        for hidden in hidden_sets:
            minus = sql.SQL(" - {}::text[]").format(sql.Literal(sorted(hidden))) if hidden else sql.SQL("")
            selects.append(sql.SQL("(to_jsonb({}){})::text").format(new_row, minus))
            selects.append(sql.SQL("({}{})::text").format(old_payload, minus))
        query = sql.SQL(
            "select {} from unnest(%s::jsonb[], %s::jsonb[]) with ordinality as c(n, o, i) order by c.i"
        ).format(sql.SQL(", ").join(selects))
        conn = await self._connection()
        async with conn.transaction(force_rollback=True):
            rows = await (await conn.execute(query, (new_images, old_images))).fetchall()
        encoded = []
        for change, result in zip(changes, rows, strict=True):
            item = EncodedChange(
                change,
                json.loads(result[0], parse_float=Decimal) if result[0] is not None else None,
                json.loads(result[1], parse_float=Decimal) if result[1] is not None else None,
            )
            for index in range(len(hidden_sets)):
                new_text, old_text = result[2 + 2 * index], result[3 + 2 * index]
                item.variants.append(
                    (
                        new_text if change.action != "DELETE" else None,
                        (old_text or "{}") if change.action != "INSERT" else None,
                    )
                )
            encoded.append(item)
        return encoded

    async def visible(
        self,
        table: TableInfo,
        checks: Sequence[tuple[Claims, RoleAccess, Sequence[WalChange]]],
    ) -> list[set[int]]:
        """For each (claims, access, changes), the indexes of the changes those claims may SELECT."""
        results: list[set[int]] = [set() for _ in checks]
        queries: list[tuple[int, Claims, sql.Composed, tuple[Any, ...]]] = []
        for position, (claims, access, changes) in enumerate(checks):
            if not access.exists:
                continue
            if access.bypass_rls or not table.rls_enabled:
                if access.can_select_pk:
                    results[position] = set(range(len(changes)))
                continue
            upserts = [i for i, change in enumerate(changes) if change.action != "DELETE"]
            deletes = [i for i, change in enumerate(changes) if change.action == "DELETE"]
            if upserts and access.can_select_pk:
                keys = [Jsonb({name: (changes[i].new or {}).get(name) for name in table.pk}) for i in upserts]
                queries.append((position, claims, self._pk_lookup(table), (upserts, keys)))
            if deletes and access.policy_predicate is not None:
                json_columns = {c.name for c in table.columns if c.type_name in _JSON_TYPES}
                images = [_typed_image(changes[i].old, json_columns) for i in deletes]
                queries.append(
                    (position, claims, self._policy_check(table, access.policy_predicate), (deletes, images))
                )
        if not queries:
            return results
        conn = await self._connection()
        try:
            async with conn.transaction(force_rollback=True):
                cursors = []
                async with conn.pipeline():
                    await conn.execute(f"set local statement_timeout = {CHECK_TIMEOUT_MS}")
                    for position, claims, query, params in queries:
                        await conn.execute(
                            "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true)",
                            (claims.role, claims.claims_json),
                        )
                        cursor = conn.cursor()
                        await cursor.execute(query, params)
                        cursors.append((position, cursor))
                for position, cursor in cursors:
                    results[position].update(row[0] for row in await cursor.fetchall())
        except psycopg.Error as error:
            # Fail closed: nobody gets this batch of this table rather than someone getting too much.
            logger.error("rls check failed table=%s.%s error=%s", table.schema, table.name, error)
            return [set() for _ in checks]
        return results

    @staticmethod
    def _pk_lookup(table: TableInfo) -> sql.Composed:
        conditions = sql.SQL(" and ").join(
            sql.SQL("t.{} = (k.key ->> {})::{}").format(
                sql.Identifier(name), sql.Literal(name), sql.SQL(_column(table, name).sql_type)
            )
            for name in table.pk
        )
        return sql.SQL(
            "select k.i from unnest(%s::int[], %s::jsonb[]) as k(i, key) "
            "where exists (select from {} as t where {})"
        ).format(table.ident, conditions)

    @staticmethod
    def _policy_check(table: TableInfo, predicate: str) -> sql.Composed:
        # The image is aliased as the table, so the policy's column references resolve as they do in RLS.
        return sql.SQL(
            "select k._realtime_i from unnest(%s::int[], %s::jsonb[]) as k(_realtime_i, _realtime_img) "
            "cross join lateral jsonb_populate_record(null::{}, k._realtime_img) as {} where {}"
        ).format(table.ident, sql.Identifier(table.name), sql.SQL(predicate))


def _column(table: TableInfo, name: str) -> ColumnInfo:
    column = table.column(name)
    if column is None:
        raise KeyError(f"{table.schema}.{table.name} has no column {name}")
    return column


def _typed_image(image: dict[str, Any] | None, json_columns: set[str]) -> Jsonb | None:
    """wal2json sends json/jsonb values as text; parse them so jsonb_populate_record keeps them nested."""
    if image is None:
        return None
    if not json_columns:
        return Jsonb(image)
    typed = dict(image)
    for name in json_columns & typed.keys():
        if isinstance(typed[name], str):
            with contextlib.suppress(json.JSONDecodeError):
                typed[name] = json.loads(typed[name])
    return Jsonb(typed)
