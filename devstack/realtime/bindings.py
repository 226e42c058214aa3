"""postgres_changes bindings: parse a join's bindings, give each a stable id, match rows to filters."""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

EVENTS = frozenset({"*", "INSERT", "UPDATE", "DELETE"})
OPERATORS = frozenset({"eq", "neq", "lt", "lte", "gt", "gte", "in"})
ORDERING_OPERATORS = frozenset({"lt", "lte", "gt", "gte"})
MAX_IN_VALUES = 100
_ID_MASK = 2**27 - 1  # the real server's ids are :erlang.phash2(params), 0..2^27-1


class BindingError(ValueError):
    """A binding the server cannot subscribe; the message goes out in a `system` error."""


def binding_id(params: Mapping[str, Any]) -> int:
    """A stable id for a binding's params: identical bindings get the same id on every join.

    Never 0: realtime-py ignores a callback whose id is falsy.
    """
    digest = zlib.crc32(json.dumps(params, sort_keys=True, separators=(",", ":")).encode())
    return (digest & _ID_MASK) or 1


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """`column=operator.value` as written by the client; values are still text."""

    column: str
    operator: str
    values: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> FilterSpec:
        column, sep, rest = text.partition("=")
        operator, dot, value = rest.partition(".")
        if not sep or not column or not dot:
            raise BindingError(
                f"Error parsing `filter` params: {text!r} is not of the form column=operator.value"
            )
        if operator not in OPERATORS:
            raise BindingError(
                f"Error parsing `filter` params: operator {operator!r} is not supported "
                f"(use one of {', '.join(sorted(OPERATORS))})"
            )
        if operator != "in":
            return cls(column, operator, (value,))
        if not (value.startswith("(") and value.endswith(")")):
            raise BindingError("Error parsing `filter` params: `in` takes a list like in.(a,b)")
        values = tuple(_unquote(item.strip()) for item in value[1:-1].split(",")) if value[1:-1] else ()
        if not values or len(values) > MAX_IN_VALUES:
            raise BindingError(f"Error parsing `filter` params: `in` takes 1 to {MAX_IN_VALUES} values")
        return cls(column, operator, values)


def _unquote(item: str) -> str:
    return item[1:-1] if len(item) >= 2 and item[0] == item[-1] == '"' else item


@dataclass(frozen=True, slots=True)
class BindingSpec:
    """One entry of config.postgres_changes, normalised as the real server reads it."""

    id: int
    echo: dict[str, Any]  # the client's map, echoed verbatim (plus id) in the join reply
    event: str
    schema: str
    table: str  # "*" for every published table of the schema
    filter: FilterSpec | None

    @classmethod
    def parse(cls, params: object) -> BindingSpec:
        if not isinstance(params, dict):
            raise BindingError(
                f"Error parsing postgres_changes params: expected an object, received {params!r}"
            )
        event = params.get("event")
        schema, table, filter_text = params.get("schema"), params.get("table"), params.get("filter")
        for name, value in (("schema", schema), ("table", table), ("filter", filter_text)):
            if value is not None and not isinstance(value, str):
                raise BindingError(f"Error parsing postgres_changes params: `{name}` must be a string")
        return cls(
            id=binding_id(params),
            echo=dict(params),
            # A missing or unknown event means every event (subscriptions.ex parse_subscription_params).
            event=event if isinstance(event, str) and event in EVENTS else "*",
            schema=schema or "public",
            table=table or "*",
            filter=FilterSpec.parse(filter_text) if filter_text else None,
        )

    def describe(self) -> str:
        filters = (
            f'[{{"{self.filter.column}", "{self.filter.operator}", "{",".join(self.filter.values)}"}}]'
            if self.filter
            else "[]"
        )
        return f"[event: {self.event}, schema: {self.schema}, table: {self.table}, filters: {filters}]"


# How a column's values order, from pg_type.typcategory; None means only eq, neq and in are offered.
OrderKey = Callable[[Any], Any]


def order_key_for(category: str, type_name: str, enum_labels: tuple[str, ...]) -> OrderKey | None:
    if category == "N":
        return lambda value: value  # int or Decimal (records are parsed with parse_float=Decimal)
    if category == "B":
        return bool
    if category == "E":
        positions = {label: index for index, label in enumerate(enum_labels)}
        return lambda value: positions[value]
    if type_name in ("timestamptz", "timestamp"):
        return datetime.fromisoformat
    if category in ("S", "U") or type_name in ("date", "time"):
        # The cluster's collation is C.UTF-8 (code point order), which is Python's str order; a uuid
        # orders by its bytes, which is the order of its canonical lowercase text.
        return str
    return None


@dataclass(frozen=True, slots=True)
class RowFilter:
    """A filter bound to a column: values canonicalised by Postgres (to_jsonb of the typed value)."""

    column: str
    operator: str
    values: tuple[Any, ...]
    order_key: OrderKey | None

    def matches(self, image: Mapping[str, Any] | None) -> bool:  # noqa: PLR0911 - one per operator
        """Evaluate against a row image as Postgres would: a missing column or a NULL never matches."""
        if image is None or image.get(self.column) is None:
            return False
        value = image[self.column]
        if self.operator == "eq":
            return bool(value == self.values[0])
        if self.operator == "neq":
            return bool(value != self.values[0])
        if self.operator == "in":
            return value in self.values
        assert self.order_key is not None  # checked when the binding was subscribed
        left, right = self.order_key(value), self.order_key(self.values[0])
        if self.operator == "lt":
            return bool(left < right)
        if self.operator == "lte":
            return bool(left <= right)
        if self.operator == "gt":
            return bool(left > right)
        return bool(left >= right)
