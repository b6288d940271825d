"""Grouped aggregates with nearest-rank percentiles, in SQL, on both dialects.

The dashboard's 5-minute figures (:mod:`controlplane.store.queries`) and the
per-minute rollups (:meth:`controlplane.store.repo.Store.rollup`) both count
rows and take :func:`controlplane.stats.percentile` of some columns per group;
this is the one place that says how in SQL:

- PostgreSQL: ``percentile_disc(q) WITHIN GROUP (ORDER BY x)``, which is the
  nearest rank: the first value whose position in the order is at least
  ``q * n``, i.e. rank ``ceil(q * n)`` in double precision like Python's. It
  skips NULLs, so a value that does not count is given as NULL.
- SQLite has no percentile functions: each value's rank within its group by a
  window function, and the value at rank ``max(1, ceil(q * n))``, with
  SQLite's truncating ``CAST`` (PostgreSQL's rounds: that branch is SQLite's).

Both give :func:`controlplane.stats.percentile` value for value
(tests/integration/test_dashboard_queries.py, tests/integration/test_rollup_sql.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Float, Integer, Select, and_, case, cast, func, literal, select


def count_where(condition: Any) -> Any:
    """SQL: how many rows of the group meet ``condition``."""
    return func.sum(case((condition, 1), else_=0))


def _rank(q: float, n: Any) -> Any:
    """SQL for the nearest rank ``max(1, ceil(q * n))`` of :func:`controlplane.stats.percentile`, in the same float arithmetic."""
    x = literal(q, Float) * n
    whole = cast(x, Integer)  # truncates (on SQLite); x >= 0
    return case((x > whole, whole + 1), (whole < 1, 1), else_=whole)


def grouped(
    rows: Select[Any],
    keys: Sequence[str],
    columns: Callable[[Any], Sequence[Any]],
    percentiles: Sequence[tuple[str, float]],
    dialect: str,
) -> Select[Any]:
    """``SELECT keys, columns, percentiles FROM rows GROUP BY keys``, in that column order.

    ``rows`` is a select of labelled columns (the group's keys, the values and
    whatever ``columns`` aggregates); ``columns`` is called with the columns
    of the relation the aggregates run on and returns aggregate expressions;
    ``percentiles`` are (value column, q) pairs, each the nearest-rank
    percentile of that column's non-NULL values in the group (NULL if none).
    """
    if dialect == "postgresql":
        c = rows.subquery("grouped_rows").c  # flattened by the planner: a plain grouped scan
        at_rank: list[Any] = [func.percentile_disc(q).within_group(c[v]) for v, q in percentiles]  # one shared sort per value column
        return select(*(c[k] for k in keys), *columns(c), *at_rank).group_by(*(c[k] for k in keys))
    # the rows first (MATERIALIZED: else SQLite walks a whole index for the partitions' order), in a WITH nested in the
    # FROM: at the top it would precede an INSERT ... SELECT of this, and Python's sqlite3 counts the rows of a statement
    # only when it starts with INSERT
    window = rows.cte("grouped_rows", nesting=True).prefix_with("MATERIALIZED", dialect="sqlite")
    w = window.c
    part = [w[k] for k in keys]
    values = list(dict.fromkeys(v for v, _ in percentiles))
    ranks = [func.row_number().over(partition_by=part, order_by=w[v].asc().nulls_last()).label(f"rank_{v}") for v in values]
    counts = [func.count(w[v]).over(partition_by=part).label(f"count_{v}") for v in values]
    r = select(*w, *ranks, *counts).subquery().c
    at_rank = [func.max(case((and_(r[v].is_not(None), r[f"rank_{v}"] == _rank(q, r[f"count_{v}"])), r[v]))) for v, q in percentiles]
    return select(*(r[k] for k in keys), *columns(r), *at_rank).group_by(*(r[k] for k in keys))


__all__ = ["count_where", "grouped"]
