"""Fit a row to its table before writing it, so one bad value never costs a batch.

Every column is checked against what both databases accept: integers within
PostgreSQL's 32-bit ``INTEGER`` (SQLite would take 64 bits, but the schema is
the same on both), finite floats, text without NUL or other control
characters and no longer than the column, aware datetimes. A value that does
not fit is clamped, escaped, cut or replaced by NULL, and a note says which,
so the stored row is never mistaken for a clean one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, Integer, String, Table

from controlplane.textsafe import bounded_text

INT_MIN, INT_MAX = -(2**31), 2**31 - 1


def _show(value: Any) -> str:
    return repr(bounded_text(str(value), 40))


def fit_row(table: Table, values: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``values`` made storable in ``table``, and a note per value that had to change."""
    out = dict(values)
    notes: list[str] = []
    for column in table.columns:
        name = column.name
        if name not in out or out[name] is None:
            continue
        value = out[name]
        kind = getattr(column.type, "impl", column.type)  # a TypeDecorator's underlying type
        fixed: Any = value
        why = ""
        if isinstance(kind, Boolean):
            if not isinstance(value, bool):
                fixed, why = bool(value) if isinstance(value, int | float) and math.isfinite(value) else None, "is not a boolean"
        elif isinstance(kind, Integer):
            if isinstance(value, bool) or not isinstance(value, int):
                fixed, why = None, "is not an integer"
            elif not INT_MIN <= value <= INT_MAX:
                fixed, why = min(INT_MAX, max(INT_MIN, value)), f"out of range, clamped to {min(INT_MAX, max(INT_MIN, value))}"
        elif isinstance(kind, Float):
            if isinstance(value, bool) or not isinstance(value, int | float):
                fixed, why = None, "is not a number"
            elif not math.isfinite(value):
                fixed, why = None, "is not finite"
        elif isinstance(kind, String):  # Text is a String too; String(n) has a length
            text = value if isinstance(value, str) else str(value)
            limit = getattr(kind, "length", None) or 100_000
            fixed = bounded_text(text, limit)
            if fixed != value:
                why = "escaped or cut to fit"
        elif isinstance(kind, DateTime):
            if not isinstance(value, datetime):
                fixed, why = None, "is not a datetime"
            elif value.tzinfo is None:
                fixed, why = value.replace(tzinfo=UTC), "had no time zone, taken as UTC"
        if why:
            if fixed is None and not column.nullable:
                fixed = _neutral(kind)
            out[name] = fixed
            notes.append(f"{name}: {_show(value)} {why}")
    return out, notes


def _neutral(kind: Any) -> Any:
    if isinstance(kind, Boolean):
        return False
    if isinstance(kind, Integer):
        return 0
    if isinstance(kind, Float):
        return 0.0
    if isinstance(kind, DateTime):
        return datetime.now(UTC)
    return ""
