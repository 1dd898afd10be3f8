"""Compile a `SearchQuery` plan into SQLite SQL + parameters (pure: no connection, golden-tested).

Shape of a page query:

    SELECT rid, type, id, k0.. FROM (
        SELECT r.rid, r.type, r.id, <sort expressions> AS k0.. FROM resource r
        WHERE r.type IN (..) AND r.deleted = 0 AND <filters>) p
    WHERE <keyset after the cursor> ORDER BY k0.., rid LIMIT n

Every filter is a boolean over the outer alias. The one chosen as *driver* (by the executor, which
probes selectivity) is written `r.rid IN (SELECT x.rid ...)` so SQLite starts from the index; the others
are correlated `EXISTS (... x.rid = r.rid ...)` probes on the (rid, param) indexes. With no driver SQLite
walks `resource (type, deleted, rid)` in rid order and stops at the page size. Semantics mirror
`search/match.py` exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fhir_server.model.definitions import resource_types
from fhir_server.search.ast import (
    Chain,
    Criterion,
    Filter,
    Has,
    MissingValue,
    RangeValue,
    SearchQuery,
    SortKey,
    TokenValue,
)
from fhir_server.search.match import NUM_MAX, STRING_MAX
from fhir_server.storage.sqlite.predicates import in_list, instant_sql, value_sql

TABLE_OF = {
    "string": "idx_string",
    "token": "idx_token",
    "reference": "idx_reference",
    "date": "idx_date",
    "number": "idx_number",
    "quantity": "idx_quantity",
    "uri": "idx_uri",
    "composite": "idx_composite",
}


@dataclass
class Sql:
    """SQL text and its positional parameters, built together so they cannot drift."""

    text: str = ""
    params: list[Any] = field(default_factory=list)


class _Builder:
    """Fresh aliases, and the resource types the filter being compiled applies to (chains and _has
    switch them for their inner filters)."""

    def __init__(self, types: tuple[str, ...]) -> None:
        self.n = 0
        self.types = types

    def alias(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    @contextmanager
    def scope(self, types: tuple[str, ...]) -> Iterator[None]:
        outer, self.types = self.types, types
        try:
            yield
        finally:
            self.types = outer


def _criterion_sql(c: Criterion, outer: str, b: _Builder, params: list[Any]) -> str:
    if c.param.code == "_id":
        ids = [v.code for v in c.values if isinstance(v, TokenValue)]
        cond = in_list(f"{outer}.id", ids, params)
        return f"NOT ({cond})" if c.modifier == "not" else cond
    if c.param.code == "_lastUpdated":
        ors = []
        for v in c.values:
            assert isinstance(v, RangeValue)
            ors.append(instant_sql(v, f"{outer}.last_updated_us", params))
        return "(" + " OR ".join(ors) + ")"
    table = TABLE_OF[c.param.type if c.param.type in TABLE_OF else "token"]
    if c.modifier in ("of-type", "identifier"):
        table = "idx_token"
    x = b.alias("x")
    by_rid = f"INDEXED BY {table}_rid"  # probes go by (rid, param), never by value
    first = c.values[0]
    sub_params: list[Any] = []
    pid_cond = in_list(f"{x}.param", list(c.param.pids), sub_params)
    if isinstance(first, MissingValue):
        params.extend(sub_params)
        exists = f"EXISTS (SELECT 1 FROM {table} {x} {by_rid} WHERE {x}.rid = {outer}.rid AND {pid_cond})"
        return f"NOT {exists}" if first.missing else exists
    ors = [f"({value_sql(c, v, x, sub_params)})" for v in c.values]
    value_cond = ors[0] if len(ors) == 1 else "(" + " OR ".join(ors) + ")"
    params.extend(sub_params)
    probe = f"SELECT 1 FROM {table} {x} {by_rid} WHERE {x}.rid = {outer}.rid AND {pid_cond} AND {value_cond}"
    exists = f"EXISTS ({probe})"
    return f"NOT {exists}" if c.modifier == "not" else exists


def drivable(f: Filter) -> bool:
    """Whether a filter can drive the query from an index (a positive test with a rid subquery)."""
    if isinstance(f, Chain | Has):
        return True
    return (
        f.param.code != "_id"
        and f.modifier not in ("not", "missing")
        and not isinstance(f.values[0], MissingValue)
    )


def rid_subquery(f: Filter, b: _Builder, params: list[Any]) -> str:
    """`SELECT rid ...` of the resources matching a drivable filter, starting from its index."""
    if isinstance(f, Criterion) and f.param.code == "_lastUpdated":
        u = b.alias("u")
        types = in_list(f"{u}.type", list(b.types), params)
        ranges = _criterion_sql(f, u, b, params)
        return f"SELECT {u}.rid FROM resource {u} INDEXED BY resource_type_lu WHERE {types} AND {ranges}"
    if isinstance(f, Criterion):
        table = "idx_token" if f.modifier in ("of-type", "identifier") else TABLE_OF[f.param.type]
        x = b.alias("x")
        pid_cond = in_list(f"{x}.param", list(f.param.pids), params)
        ors = [f"({value_sql(f, v, x, params)})" for v in f.values]
        value_cond = ors[0] if len(ors) == 1 else "(" + " OR ".join(ors) + ")"
        return f"SELECT {x}.rid FROM {table} {x} WHERE {pid_cond} AND {value_cond}"
    if isinstance(f, Chain):
        x, t = b.alias("x"), b.alias("t")
        types = in_list(f"{t}.type", list(f.target_types), params)
        with b.scope(f.target_types):
            inner = filter_sql(f.inner, t, "in", b, params)
        pids = in_list(f"{x}.param", list(f.ref.pids), params)
        return (
            f"SELECT {x}.rid FROM resource {t} CROSS JOIN idx_reference {x} "
            f"WHERE {types} AND {t}.deleted = 0 AND {inner} AND {pids} "
            f"AND {x}.target_id = {t}.id AND {x}.target_type = {t}.type AND {x}.url = ''"
        )
    s, x, t = b.alias("s"), b.alias("x"), b.alias("t")
    with b.scope((f.source_type,)):
        inner = filter_sql(f.inner, s, "in", b, params)
    pids = in_list(f"{x}.param", list(f.ref.pids), params)
    params.append(f.source_type)
    return (
        f"SELECT {t}.rid FROM resource {s} CROSS JOIN idx_reference {x} CROSS JOIN resource {t} "
        f"WHERE {inner} AND {x}.rid = {s}.rid AND {pids} AND {s}.type = ? AND {s}.deleted = 0 "
        f"AND {x}.url = '' AND {t}.type = {x}.target_type AND {t}.id = {x}.target_id"
    )


def filter_sql(f: Filter, outer: str, mode: str, b: _Builder, params: list[Any]) -> str:
    """Boolean SQL over alias `outer` (a resource row); mode 'in' drives from the index, 'exists' probes."""
    if mode == "in" and drivable(f):
        return f"{outer}.rid IN ({rid_subquery(f, b, params)})"
    if isinstance(f, Criterion):
        return _criterion_sql(f, outer, b, params)
    if isinstance(f, Chain):
        x, t = b.alias("x"), b.alias("t")
        pids = in_list(f"{x}.param", list(f.ref.pids), params)
        types = in_list(f"{t}.type", list(f.target_types), params)
        with b.scope(f.target_types):
            inner = filter_sql(f.inner, t, "exists", b, params)
        return (
            f"EXISTS (SELECT 1 FROM idx_reference {x} INDEXED BY idx_reference_rid CROSS JOIN resource {t} "
            f"WHERE {x}.rid = {outer}.rid AND {pids} AND {t}.type = {x}.target_type "
            f"AND {t}.id = {x}.target_id AND {x}.url = '' AND {types} AND {t}.deleted = 0 AND {inner})"
        )
    s, x = b.alias("s"), b.alias("x")
    pids = in_list(f"{x}.param", list(f.ref.pids), params)
    if _on_index_rows(f.inner):
        # The referring resource's row is not needed: parameter ids are scoped to its type, and a
        # deleted resource has no index rows. One B-tree lookup fewer per row probed (a member's view
        # filter probes every candidate row).
        with b.scope((f.source_type,)):
            inner = filter_sql(f.inner, x, "exists", b, params)
        return (
            f"EXISTS (SELECT 1 FROM idx_reference {x} WHERE {pids} AND {x}.target_id = {outer}.id "
            f"AND {x}.target_type = {outer}.type AND {x}.url = '' AND {inner})"
        )
    params.append(f.source_type)
    with b.scope((f.source_type,)):
        inner = filter_sql(f.inner, s, "exists", b, params)
    return (
        f"EXISTS (SELECT 1 FROM idx_reference {x} CROSS JOIN resource {s} "
        f"WHERE {pids} AND {x}.target_id = {outer}.id AND {x}.target_type = {outer}.type AND {x}.url = '' "
        f"AND {s}.rid = {x}.rid AND {s}.type = ? AND {s}.deleted = 0 AND {inner})"
    )


def _on_index_rows(f: Filter) -> bool:
    """Whether a filter reads only index rows of its resource (by `rid`), never the resource row itself
    (`_id`, `_lastUpdated`, chains and reverse chains do)."""
    return isinstance(f, Criterion) and f.param.code not in ("_id", "_lastUpdated")


def driver_probe(f: Filter, types: tuple[str, ...], limit: int) -> Sql:
    """Counts at most `limit` rows of a filter's driving subquery: the executor's selectivity probe."""
    params: list[Any] = []
    sub = rid_subquery(f, _Builder(types), params)
    params.append(limit)
    return Sql(f"SELECT count(*) FROM ({sub} LIMIT ?)", params)


def sort_sql(key: SortKey, outer: str, params: list[Any]) -> str:
    """A per-resource scalar to sort on: the smallest (largest when descending) value of the param."""
    code, desc = key.param.code, key.descending
    if code == "_id":
        return f"{outer}.id"
    if code == "_lastUpdated":
        return f"{outer}.last_updated_us"
    column = {
        "string": "value",
        "token": "code",
        "reference": "target_id",
        "date": "high" if desc else "low",
        "number": "high" if desc else "low",
        "quantity": "high" if desc else "low",
        "uri": "value",
    }[key.param.type]
    agg = "max" if desc else "min"
    textual = key.param.type in ("string", "token", "reference", "uri")
    missing: Any = ("" if desc else STRING_MAX) if textual else (-NUM_MAX if desc else NUM_MAX)
    pid_cond = in_list("s.param", list(key.param.pids), params)
    params.append(missing)
    table = TABLE_OF[key.param.type]
    by_rid = f"INDEXED BY {table}_rid"
    scalar = f"SELECT {agg}(s.{column}) FROM {table} s {by_rid} WHERE s.rid = {outer}.rid AND {pid_cond}"
    return f"coalesce(({scalar}), ?)"


def _sort_column(key: SortKey) -> tuple[str, str, str] | None:
    """(table, column, index hint) that yields `key`'s rows already in sort order, or None."""
    if key.param.code in ("_id", "_lastUpdated") or len(key.param.pids) != 1:
        return None
    kind, desc = key.param.type, key.descending
    table = TABLE_OF.get(kind)
    if table is None or kind == "composite":
        return None
    if kind in ("date", "number", "quantity"):
        column = "high" if desc else "low"
        if kind == "date":
            hint = "INDEXED BY idx_date_high" if desc else ""  # the primary key starts (param, low)
        else:
            hint = f"INDEXED BY {table}_{column}"
        return table, column, hint
    column = {"string": "value", "token": "code", "reference": "target_id", "uri": "value"}[kind]
    return table, column, ""  # the primary key starts (param, column)


def compile_sorted_stream(query: SearchQuery, after: tuple[list[Any], int] | None) -> tuple[Sql, Sql] | None:
    """A one-key `_sort` read in order from the sort parameter's index instead of sorting every match.

    Returns two unbounded queries the executor reads lazily: (A) resources that have the parameter,
    walking its index in sort order and keeping each resource's row that carries its sort value
    (duplicates of one rid are adjacent; the executor drops them), then (B) resources without it
    (they sort last) in rid order. Same order and cursor as `compile_page`; None when not applicable.
    """
    if len(query.sort) != 1:
        return None
    key = query.sort[0]
    found = _sort_column(key)
    if found is None:
        return None
    table, col, hint = found
    desc = key.descending
    textual = key.param.type in ("string", "token", "reference", "uri")
    missing: Any = ("" if desc else STRING_MAX) if textual else (-NUM_MAX if desc else NUM_MAX)
    pid = key.param.pids[0]
    b = _Builder(query.types)
    common: list[Any] = []
    conds = ["r.deleted = 0"]
    if len(query.types) < len(resource_types()):
        conds.insert(0, in_list("r.type", list(query.types), common))
    conds += [filter_sql(f, "r", "exists", b, common) for f in query.filters]
    where = " AND ".join(conds)
    agg = "max" if desc else "min"
    # descending, a largest value of '' ties with the "missing" sentinel '' (ties go by rid), so those
    # resources are read with the missing ones in stream B
    present_x = f" AND x.{col} != ''" if textual and desc else ""
    present_s = f" AND s.{col} != ''" if textual and desc else ""
    a_params: list[Any] = [pid, *common, pid]
    a_text = (
        f"SELECT r.rid, r.type, r.id, x.{col} FROM {table} x {hint} CROSS JOIN resource r "
        f"WHERE x.param = ?{present_x} AND r.rid = x.rid AND {where} "
        f"AND x.{col} = (SELECT {agg}(s.{col}) FROM {table} s INDEXED BY {table}_rid "
        "WHERE s.rid = x.rid AND s.param = ?)"
    )
    b_params: list[Any] = [missing, *common, pid]
    b_text = (
        f"SELECT r.rid, r.type, r.id, ? FROM resource r WHERE {where} AND NOT EXISTS "
        f"(SELECT 1 FROM {table} s INDEXED BY {table}_rid WHERE s.rid = r.rid AND s.param = ?{present_s})"
    )
    if after is not None:
        (value,), rid = after
        if value == missing:
            a_text += " AND 0"  # the cursor is already among the resources without a value
            b_text += " AND r.rid > ?"
            b_params.append(rid)
        else:
            a_text += f" AND (x.{col} {'<' if desc else '>'} ? OR (x.{col} = ? AND r.rid > ?))"
            a_params += [value, value, rid]
    a_text += f" ORDER BY x.{col} {'DESC' if desc else 'ASC'}, r.rid ASC"
    b_text += " ORDER BY r.rid ASC"
    return Sql(a_text, a_params), Sql(b_text, b_params)


def where_sql(query: SearchQuery, driver: int | None, params: list[Any]) -> str:
    b = _Builder(query.types)
    conds = ["r.deleted = 0"]
    if len(query.types) < len(resource_types()):  # a system search over every type needs no type test
        conds.insert(0, in_list("r.type", list(query.types), params))
    for i, f in enumerate(query.filters):
        conds.append(filter_sql(f, "r", "in" if i == driver else "exists", b, params))
    return " AND ".join(conds)


def compile_page(
    query: SearchQuery,
    *,
    driver: int | None,
    after: tuple[list[Any], int] | None,
    backwards: bool,
    limit: int,
    in_driver_order: bool = True,
) -> Sql:
    """The page query. `after` = (sort values, rid) of the cursor row; `backwards` reads the previous page
    (reversed order, the caller flips the rows back). `in_driver_order`: see `_driven_page`."""
    if driver is not None and not query.sort and in_driver_order:
        return _driven_page(query, driver, None if after is None else after[1], backwards, limit)
    params: list[Any] = []
    sort_cols = [sort_sql(k, "r", params) for k in query.sort]
    select = ", ".join(["r.rid", "r.type", "r.id", *(f"{s} AS k{i}" for i, s in enumerate(sort_cols))])
    where = where_sql(query, driver, params)
    text = f"SELECT {select} FROM resource r WHERE {where}"
    keys = [(f"k{i}", k.descending) for i, k in enumerate(query.sort)] + [("rid", False)]
    outer_where = ""
    if after is not None:
        values, rid = after
        outer_where = " WHERE " + _keyset(keys, [*values, rid], backwards, params)
    order = ", ".join(f"{col} {'DESC' if desc != backwards else 'ASC'}" for col, desc in keys)
    cols = ", ".join(["rid", "type", "id", *(f"k{i}" for i in range(len(query.sort)))])
    params.append(limit)
    if not query.sort and outer_where == "":
        return Sql(f"{text} ORDER BY r.rid {'DESC' if backwards else 'ASC'} LIMIT ?", params)
    return Sql(f"SELECT {cols} FROM ({text}){outer_where} ORDER BY {order} LIMIT ?", params)


def _driven_page(query: SearchQuery, driver: int, after_rid: int | None, backwards: bool, limit: int) -> Sql:
    """A page in rid order driven by one filter, which stops at the page size: the driver's rids are
    sorted first (cheap: no other filter evaluated), then walked in order, each resource tested against
    the other filters until the page is full. `rid IN (driver) ... ORDER BY rid` evaluated every other
    filter on every driver row before sorting, which a member's view filter (a join per row) made slow.

    The walk order is the driver's (CROSS JOIN keeps it the outer loop); SQLite does not promise to keep
    a subquery's order without an outer ORDER BY, so the executor checks the rows come back in order and
    otherwise runs the `in_driver_order=False` form (`search._page_rows`)."""
    params: list[Any] = []
    b = _Builder(query.types)
    sub = rid_subquery(query.filters[driver], b, params)
    bound = ""
    if after_rid is not None:
        bound = f" WHERE rid {'<' if backwards else '>'} ?"
        params.append(after_rid)
    conds = ["r.deleted = 0"]
    if len(query.types) < len(resource_types()):
        conds.append(in_list("r.type", list(query.types), params))
    for i, f in enumerate(query.filters):
        if i != driver:
            conds.append(filter_sql(f, "r", "exists", b, params))
    params.append(limit)
    order = "DESC" if backwards else "ASC"
    return Sql(
        f"SELECT r.rid, r.type, r.id FROM (SELECT DISTINCT rid FROM ({sub}){bound} ORDER BY rid {order} "
        f"LIMIT -1) d CROSS JOIN resource r ON r.rid = d.rid WHERE {' AND '.join(conds)} LIMIT ?",
        params,
    )


def _keyset(keys: list[tuple[str, bool]], values: list[Any], backwards: bool, params: list[Any]) -> str:
    """(k0, k1, .., rid) strictly after `values` in the page order (mixed directions expanded)."""
    col, desc = keys[0]
    op = "<" if desc != backwards else ">"
    params.append(values[0])
    if len(keys) == 1:
        return f"{col} {op} ?"
    params.append(values[0])
    rest = _keyset(keys[1:], values[1:], backwards, params)
    return f"({col} {op} ? OR ({col} = ? AND {rest}))"


def compile_count(query: SearchQuery, driver: int | None) -> Sql:
    params: list[Any] = []
    where = where_sql(query, driver, params)
    return Sql(f"SELECT count(*) FROM resource r WHERE {where}", params)
