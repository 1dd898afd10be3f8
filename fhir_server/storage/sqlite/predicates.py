"""Value predicates of the SQLite compiler: one SQL boolean per (parameter type, value) (pure).

Split from `compile.py`, which assembles them into page, count and stream queries. Semantics mirror
`search/match.py` exactly (prefixes on [low, high) ranges, token/string/reference forms).
"""

from __future__ import annotations

import math
from typing import Any

from fhir_server.search.ast import (
    CompositeValue,
    Criterion,
    RangeValue,
    ReferenceValue,
    StringValue,
    TokenValue,
    UriValue,
    Value,
)
from fhir_server.search.match import STRING_MAX, ap_window


def in_list(column: str, values: list[Any], params: list[Any]) -> str:
    params.extend(values)
    if len(values) == 1:
        return f"{column} = ?"
    return f"{column} IN ({', '.join('?' * len(values))})"


def range_sql(kind: str, v: RangeValue, lo: str, hi: str, params: list[Any]) -> str:
    """The R4 prefix semantics of match.date_match / number_match over columns lo, hi."""
    conv: Any = int if kind == "date" else float
    low, high, x = conv(v.low), conv(v.high), conv(v.value)
    p = v.prefix
    if kind == "date":
        # eq / ge / le carry a redundant bound (implied because high > low) that lets SQLite range-scan
        # the (param, low) key or the (param, high) index instead of testing every row of the parameter
        if p == "eq":
            params.extend([low, high, high])
            return f"({lo} >= ? AND {lo} < ? AND {hi} <= ?)"
        if p == "ne":
            params.extend([low, high])
            return f"NOT ({lo} >= ? AND {hi} <= ?)"
        if p == "gt":
            params.append(high)
            return f"{hi} > ?"
        if p == "lt":
            params.append(low)
            return f"{lo} < ?"
        if p == "ge":
            params.extend([low, high, low, high])
            return f"({hi} > ? AND ({hi} > ? OR ({lo} >= ? AND {hi} <= ?)))"
        if p == "le":
            params.extend([high, low, low, high])
            return f"({lo} < ? AND ({lo} < ? OR ({lo} >= ? AND {hi} <= ?)))"
        if p == "sa":
            params.append(high)
            return f"{lo} >= ?"
        if p == "eb":
            params.append(low)
            return f"{hi} <= ?"
        a, b = ap_window(v, "date")  # integer columns: lo < b ⟺ lo < ceil(b), hi > a ⟺ hi > floor(a)
        params.extend([math.ceil(b), math.floor(a)])
        return f"({lo} < ? AND {hi} > ?)"
    if p in ("eq", "ne"):
        params.extend([low, high])
        cond = f"({lo} >= ? AND {hi} <= ?)"
        return cond if p == "eq" else f"NOT {cond}"
    ops = {"gt": f"{hi} > ?", "lt": f"{lo} < ?", "ge": f"{hi} >= ?", "le": f"{lo} <= ?", "sa": f"{lo} > ?"}
    ops["eb"] = f"{hi} < ?"
    if p in ops:
        params.append(x)
        return ops[p]
    a, b = ap_window(v, "number")
    params.extend([b, a])
    return f"({lo} <= ? AND {hi} >= ?)"


def instant_sql(v: RangeValue, col: str, params: list[Any]) -> str:
    """Date prefixes for an instant t, whose range is [t, t + 1): the same rules as `_range_sql`,
    solved for t so the (type, last_updated_us) index can range-scan."""
    low, high, p = int(v.low), int(v.high), v.prefix
    if p in ("eq", "ne"):
        params.extend([low, high])
        cond = f"({col} >= ? AND {col} < ?)"
        return cond if p == "eq" else f"NOT {cond}"
    if p in ("gt", "sa"):
        params.append(high)
        return f"{col} >= ?"
    if p in ("lt", "eb"):
        params.append(low)
        return f"{col} < ?"
    if p == "ge":
        params.append(low)
        return f"{col} >= ?"
    if p == "le":
        params.append(high)
        return f"{col} < ?"
    a, b = ap_window(v, "date")  # t + 1 > a ⟺ t >= floor(a - 1) + 1; t < b ⟺ t < ceil(b)
    params.extend([math.floor(a - 1) + 1, math.ceil(b)])
    return f"({col} >= ? AND {col} < ?)"


def value_sql(c: Criterion, v: Value, x: str, params: list[Any]) -> str:
    if isinstance(v, TokenValue):
        if v.system is None and v.code is None:
            params.append(v.text)
            return f"instr({x}.text, ?) > 0"
        parts = []
        if v.code is not None:
            params.append(v.code)
            parts.append(f"{x}.code = ?")
        if v.system is not None:
            params.append(v.system)
            parts.append(f"{x}.system = ?")
        return " AND ".join(parts)
    if isinstance(v, StringValue):
        if c.modifier == "exact":
            params.append(v.value)
            return f"{x}.raw = ?"
        if c.modifier == "contains":
            params.append(v.value)
            return f"instr({x}.value, ?) > 0"
        params.extend([v.value, v.value + STRING_MAX])
        return f"{x}.value >= ? AND {x}.value < ?"
    if isinstance(v, ReferenceValue):
        if v.url:
            params.append(v.url)
            return f"{x}.url = ?"
        params.append(v.id)
        if v.type is None:
            return f"{x}.target_id = ? AND {x}.url = ''"
        params.append(v.type)
        return f"{x}.target_id = ? AND {x}.target_type = ? AND {x}.url = ''"
    if isinstance(v, UriValue):
        if c.modifier == "below":
            params.extend([v.value, v.value + STRING_MAX])
            return f"{x}.value >= ? AND {x}.value < ?"
        if c.modifier == "above":
            params.append(v.value)
            return f"substr(?, 1, length({x}.value)) = {x}.value"
        params.append(v.value)
        return f"{x}.value = ?"
    if isinstance(v, CompositeValue):
        parts = [value_sql(c, v.first, x, params)]
        if v.second_range is not None:
            r = v.second_range
            if v.second_kind == "quantity" and r.system is not None:
                params.append(r.system + "|")
                parts.append(f"substr({x}.key, 1, length(?)) = ?")
                params.append(r.system + "|")
            if v.second_kind == "quantity" and r.code is not None:
                params.append("|" + r.code)
                parts.append(f"substr({x}.key, -length(?)) = ?")
                params.append("|" + r.code)
            kind = "date" if v.second_kind == "date" else "number"
            parts.append(range_sql(kind, r, f"{x}.low", f"{x}.high", params))
        else:
            assert v.second_key is not None
            if v.second_kind == "token-any":
                params.extend([v.second_key, v.second_key])
                parts.append(f"substr({x}.key, -length(?)) = ?")
            elif v.second_kind == "string":
                params.extend([v.second_key, v.second_key + STRING_MAX])
                parts.append(f"{x}.key >= ? AND {x}.key < ?")
            else:
                params.append(v.second_key)
                parts.append(f"{x}.key = ?")
        return " AND ".join(parts)
    if isinstance(v, RangeValue):
        kind = c.param.type
        if kind == "quantity":
            parts = []
            if v.system is not None:
                params.append(v.system)
                parts.append(f"{x}.system = ?")
            if v.code is not None:
                params.append(v.code)
                parts.append(f"{x}.code = ?")
            parts.append(range_sql("number", v, f"{x}.low", f"{x}.high", params))
            return " AND ".join(parts)
        return range_sql(kind, v, f"{x}.low", f"{x}.high", params)
    raise AssertionError(f"unexpected value {v!r}")
