"""Ray's state filters: `[(column, "=" | "!=", value), ...]`, all of which a row must pass.

A value is read as the column's type, as Ray reads the CLI's `--filter key=value` strings: a
number column takes "3", a bool column "true"/"false". `state` is matched without regard to
case. An unknown column or predicate raises StateApiError naming what is allowed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from actorhub.exceptions import StateApiError
from actorhub.util.state.schema import StateSchema

Filter = tuple[str, str, Any]
PREDICATES = ("=", "!=")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")

Row = TypeVar("Row", bound=StateSchema)


def parse_cli_filter(text: str) -> Filter:
    """`key=value` or `key!=value`, as the CLI's --filter takes them."""
    for predicate in ("!=", "="):
        key, found, value = text.partition(predicate)
        if found and key.strip():
            return key.strip(), predicate, value.strip()
    raise StateApiError(f"--filter {text!r}: expected KEY=VALUE or KEY!=VALUE")


def apply(rows: Iterable[Row], schema: type[Row], filters: Sequence[Filter] | None) -> list[Row]:
    checks = [_check(schema, f) for f in filters or ()]
    return [row for row in rows if all(_passes(row, check) for check in checks)]


def _check(schema: type[StateSchema], given: Filter) -> tuple[str, bool, Any]:
    if not isinstance(given, tuple | list) or len(given) != 3:
        raise StateApiError(f"filter {given!r}: expected a (column, predicate, value) tuple")
    column, predicate, value = given
    types = schema.column_types()
    if column not in types:
        raise StateApiError(
            f"filter on {column!r}: {schema.__name__} has no such column; the columns are {', '.join(types)}"
        )
    if predicate not in PREDICATES:
        raise StateApiError(f"filter on {column!r}: predicate {predicate!r} is not one of {PREDICATES}")
    return column, predicate == "=", _as_column_type(column, types[column], value)


def _as_column_type(column: str, type_name: str, value: Any) -> Any:
    if not isinstance(value, str):
        return value
    try:
        if type_name == "bool":
            lowered = value.lower()
            if lowered not in _TRUE + _FALSE:
                raise ValueError(value)
            return lowered in _TRUE
        if type_name == "int":
            return int(value)
        if type_name == "float":
            return float(value)
    except ValueError:
        raise StateApiError(f"filter on {column!r}: {value!r} is not a {type_name}") from None
    return value


def _passes(row: StateSchema, check: tuple[str, bool, Any]) -> bool:
    column, equal, value = check
    have = row[column]
    if column == "state" and isinstance(have, str) and isinstance(value, str):
        have, value = have.upper(), value.upper()
    return (have == value) is equal
