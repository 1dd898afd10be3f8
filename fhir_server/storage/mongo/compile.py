"""Compile a `SearchQuery` plan into MongoDB filters and aggregation stages (pure, golden-tested).

Every criterion becomes an `$elemMatch` over one embedded index array (see `documents.py`), so a value
test and its parameter id hold on the *same* entry; OR of values is `$or`, `:not` is `$nor`, `:missing`
tests `idx.pids`. Semantics mirror `search/match.py` one to one (same range formulas, same sentinels).

Chains and `_has` cannot be joined inside one find, so they are *resolved* first: the store runs the
inner filter as its own query (this module builds it: `subquery`), turns the result into a set of
(type, id) keys (`resolved_keys`) and hands those back in `resolved`; the outer filter then tests
references against that set. Nothing falls back to in-memory evaluation.

A sorted page is one pipeline: `$match` → sort keys computed per document (`$addFields`: the min, or max when
descending, of the parameter's entries; sentinels for none, as match.sort_value) → keyset `$match` after
the cursor → `$sort` (keys, then type, id) → `$limit`. Cursors carry the last row's keys, so pages stay
consistent while other writes land (no skip/offset). Without `_sort` a page is a plain find in (type, id)
order with the same keyset condition.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from fhir_server.errors import InvalidSearch
from fhir_server.search.ast import (
    Chain,
    CompositeValue,
    Criterion,
    Filter,
    Has,
    MissingValue,
    RangeValue,
    ReferenceValue,
    SearchQuery,
    SortKey,
    StringValue,
    TokenValue,
    UriValue,
    Value,
)
from fhir_server.search.match import NUM_MAX, STRING_MAX, ap_window

Document = dict[str, Any]
Keys = frozenset[tuple[str, str]]
Resolved = Mapping[Filter, Keys]

NOTHING: Document = {"_id": {"$in": []}}
TIE_BREAK = (("type", False), ("id", False))
# parameter type -> element field the sort key is read from (ascending, descending)
_SORT_FIELD = {
    "string": ("v", "v"),
    "token": ("c", "c"),
    "reference": ("i", "i"),
    "uri": ("v", "v"),
    "date": ("l", "h"),
    "number": ("l", "h"),
    "quantity": ("l", "h"),
}


def all_of(conds: Iterable[Document]) -> Document:
    """AND of conditions: one merged document when their keys are disjoint, else `$and`."""
    items = [c for c in conds if c]
    merged: Document = {}
    for cond in items:
        if merged.keys() & cond.keys():
            return {"$and": items}
        merged.update(cond)
    return merged


def any_of(conds: Sequence[Document]) -> Document:
    return conds[0] if len(conds) == 1 else {"$or": list(conds)}


def _one_or_in(values: Sequence[Any]) -> Any:
    return values[0] if len(values) == 1 else {"$in": list(values)}


def _cmp(terms: Iterable[tuple[str, str, Any]]) -> Document:
    """(field, operator, value) terms ANDed; several operators on one field share its document."""
    out: Document = {}
    for fld, op, value in terms:
        out.setdefault(fld, {})[op] = value
    return out


def range_cond(kind: str, v: RangeValue, lo: str = "l", hi: str = "h", hi_shift: int = 0) -> Document:
    """The R4 prefix semantics of match.date_match / number_match over fields lo, hi.

    `hi_shift` serves a point stored in one field (`_lastUpdated`: hi = lu + 1): a test `hi op X`
    is written `lu op X - 1`, exact for integers."""

    def h(op: str, x: Any) -> tuple[str, str, Any]:
        return (hi, op, x - hi_shift)

    p = v.prefix
    if kind == "date":
        low: Any = int(v.low)
        high: Any = int(v.high)
    else:
        low, high = float(v.low), float(v.high)
    eq = _cmp([(lo, "$gte", low), h("$lte", high)])
    if p == "eq":
        return eq
    if p == "ne":
        return {"$nor": [eq]}
    if kind == "date":
        if p in ("gt", "ge"):
            gt = _cmp([h("$gt", high)])
            return gt if p == "gt" else {"$or": [gt, eq]}
        if p in ("lt", "le"):
            lt = _cmp([(lo, "$lt", low)])
            return lt if p == "lt" else {"$or": [lt, eq]}
        if p == "sa":
            return _cmp([(lo, "$gte", high)])
        if p == "eb":
            return _cmp([h("$lte", low)])
        a, b = ap_window(v, "date")
        return _cmp([(lo, "$lt", int(b)), h("$gt", int(a))])
    x = float(v.value)
    ops = {
        "gt": [h("$gt", x)],
        "lt": [(lo, "$lt", x)],
        "ge": [h("$gte", x)],
        "le": [(lo, "$lte", x)],
        "sa": [(lo, "$gt", x)],
        "eb": [h("$lt", x)],
    }
    if p in ops:
        return _cmp(ops[p])
    a, b = ap_window(v, "number")
    return _cmp([(lo, "$lte", b), h("$gte", a)])


def _regex_contains(text: str) -> Document:
    return {"$regex": re.escape(text)}


def _prefix(text: str) -> Document:
    return {"$gte": text, "$lt": text + STRING_MAX}


def _token_cond(v: TokenValue) -> Document:
    if v.system is None and v.code is None:
        return {"x": _regex_contains(v.text)}
    out: Document = {}
    if v.code is not None:
        out["c"] = v.code
    if v.system is not None:
        out["s"] = v.system
    return out


def _composite_cond(v: CompositeValue) -> Document:
    parts = [_token_cond(v.first)]
    if v.second_range is not None:
        r = v.second_range
        if v.second_kind == "quantity" and r.system is not None:
            parts.append({"k": {"$regex": "^" + re.escape(r.system + "|")}})
        if v.second_kind == "quantity" and r.code is not None:
            parts.append({"k": {"$regex": re.escape("|" + r.code) + "$"}})
        parts.append(range_cond("date" if v.second_kind == "date" else "number", r))
    else:
        assert v.second_key is not None
        if v.second_kind == "token-any":
            parts.append({"k": {"$regex": re.escape(v.second_key) + "$"}})
        elif v.second_kind == "string":
            parts.append({"k": _prefix(v.second_key)})
        else:
            parts.append({"k": v.second_key})
    return all_of(parts)


def value_cond(c: Criterion, v: Value) -> tuple[str, Document]:
    """(embedded array, condition on one of its elements) for one search value; as match._value_match,
    the array follows the value's kind (so `:identifier` / `:of-type` tokens read the token array)."""
    if isinstance(v, TokenValue):
        return "token", _token_cond(v)
    if isinstance(v, StringValue):
        if c.modifier == "exact":
            return "string", {"r": v.value}
        if c.modifier == "contains":
            return "string", {"v": _regex_contains(v.value)}
        return "string", {"v": _prefix(v.value)}
    if isinstance(v, ReferenceValue):
        if v.url:
            return "reference", {"u": v.url}
        # by id: local references only (an absolute URL with the same tail is another server's)
        if v.type is None:
            return "reference", {"i": v.id, "u": ""}
        return "reference", {"i": v.id, "t": v.type, "u": ""}
    if isinstance(v, UriValue):
        if c.modifier == "below":
            return "uri", {"v": _prefix(v.value)}
        if c.modifier == "above":
            return "uri", {"v": {"$in": [v.value[:i] for i in range(len(v.value) + 1)]}}
        return "uri", {"v": v.value}
    if isinstance(v, CompositeValue):
        return "composite", _composite_cond(v)
    if isinstance(v, RangeValue):
        kind = c.param.type
        if kind in ("date", "number"):
            return kind, range_cond(kind, v)
        extra: Document = {}
        if v.system is not None:
            extra["s"] = v.system
        if v.code is not None:
            extra["c"] = v.code
        return "quantity", all_of([extra, range_cond("number", v)])
    raise AssertionError(f"unexpected value {v!r}")


def criterion_cond(c: Criterion) -> Document:
    if c.param.code == "_id":
        ids = [v.code for v in c.values if isinstance(v, TokenValue)]
        return {"id": {"$nin" if c.modifier == "not" else "$in": ids}}
    if c.param.code == "_lastUpdated":
        ranges = [range_cond("date", v, "lu", "lu", 1) for v in c.values if isinstance(v, RangeValue)]
        return any_of(ranges) if ranges else NOTHING
    pids = list(c.param.pids)
    first = c.values[0]
    if isinstance(first, MissingValue):
        return {"idx.pids": {"$nin" if first.missing else "$in": pids}}
    pid = _one_or_in(pids) if pids else {"$in": []}
    ors = []
    for v in c.values:
        array, cond = value_cond(c, v)
        ors.append({f"idx.{array}": {"$elemMatch": all_of([{"p": pid}, cond])}})
    hit = any_of(ors)
    return {"$nor": [hit]} if c.modifier == "not" else hit


def _keys_by_type(keys: Keys, types: Iterable[str]) -> list[tuple[str, list[str]]]:
    out = []
    for t in types:
        ids = sorted(i for kt, i in keys if kt == t)
        if ids:
            out.append((t, ids))
    return out


def filter_cond(f: Filter, resolved: Resolved) -> Document:
    """One filter as a condition on resources documents; chains and _has read `resolved`."""
    if isinstance(f, Criterion):
        return criterion_cond(f)
    keys = resolved[f]
    if isinstance(f, Chain):
        groups = _keys_by_type(keys, f.target_types)
        if not groups or not f.ref.pids:
            return NOTHING
        targets = any_of([{"t": t, "i": _one_or_in(ids)} for t, ids in groups])
        element = all_of([{"p": _one_or_in(list(f.ref.pids)), "u": ""}, targets])
        return {"idx.reference": {"$elemMatch": element}}
    groups = _keys_by_type(keys, sorted({t for t, _ in keys}))
    if not groups:
        return NOTHING
    return any_of([{"type": t, "id": _one_or_in(ids)} for t, ids in groups])


def match_filter(types: Sequence[str], filters: Iterable[Filter], resolved: Resolved) -> Document:
    """The `$match` of current, non-deleted resources of `types` passing every filter."""
    base: list[Document] = [{"type": _one_or_in(list(types))}, {"deleted": False}]
    return all_of([*base, *(filter_cond(f, resolved) for f in filters)])


def unresolved(filters: Iterable[Filter], resolved: Resolved) -> list[Chain | Has]:
    """Chains and _has filters still to resolve, innermost first (an inner one feeds its outer one)."""
    out: list[Chain | Has] = []
    for f in filters:
        if isinstance(f, Chain | Has) and f not in resolved:
            out.extend(g for g in unresolved((f.inner,), resolved) if g not in out)
            if f not in out:
                out.append(f)
    return out


def subquery(f: Chain | Has, resolved: Resolved) -> tuple[Document, Document]:
    """(filter, projection) of the query resolving `f`; its inner filters must be resolved already."""
    if isinstance(f, Chain):
        return match_filter(f.target_types, (f.inner,), resolved), {"type": 1, "id": 1}
    return match_filter((f.source_type,), (f.inner,), resolved), {"idx.reference": 1}


def resolved_keys(f: Chain | Has, docs: Iterable[Document]) -> Keys:
    """Chain: the targets that matched. _has: what the matching sources point at through `f.ref`."""
    if isinstance(f, Chain):
        return frozenset((d["type"], d["id"]) for d in docs)
    pids = set(f.ref.pids)
    out: set[tuple[str, str]] = set()
    for d in docs:
        for element in (d.get("idx") or {}).get("reference", []):
            if element["p"] in pids and element["t"] and not element["u"]:
                out.add((element["t"], element["i"]))
    return frozenset(out)


# ---- sorting and paging ----


def _sort_fields(query: SearchQuery) -> list[tuple[str, bool]]:
    return [(f"_k{i}", k.descending) for i, k in enumerate(query.sort)] + list(TIE_BREAK)


def sort_stages(sort: Sequence[SortKey]) -> list[Document]:
    """`$addFields` computing `_k<i>` per document, as match.sort_value: the param's smallest value
    (largest when descending; the high end of ranges), sentinels sort a resource without one last.
    Three steps because mongomock only takes `$min`/`$max` of a field path, not of an expression."""
    if not sort:
        return []
    direct: Document = {}
    gather: Document = {}
    reduce: Document = {}
    fill: Document = {}
    for i, key in enumerate(sort):
        name = f"_k{i}"
        code, kind, desc = key.param.code, key.param.type, key.descending
        if code in ("_id", "_lastUpdated"):
            direct[name] = "$id" if code == "_id" else "$lu"
            continue
        element = _SORT_FIELD[kind][1 if desc else 0]
        chosen = {
            "$filter": {
                "input": {"$ifNull": [f"$idx.{kind}", []]},
                "as": "e",
                "cond": {"$in": ["$$e.p", list(key.param.pids)]},
            }
        }
        gather[name] = {"$map": {"input": chosen, "as": "e", "in": f"$$e.{element}"}}
        reduce[name] = {"$max" if desc else "$min": f"${name}"}
        textual = kind in ("string", "token", "reference", "uri")
        missing: Any = ("" if desc else STRING_MAX) if textual else (-NUM_MAX if desc else NUM_MAX)
        fill[name] = {"$ifNull": [f"${name}", missing]}
    stages = [{"$addFields": fields} for fields in (gather, reduce, fill) if fields]
    if direct:
        stages.insert(0, {"$addFields": direct})
    return stages


def sort_spec(query: SearchQuery, backwards: bool) -> Document:
    return {name: -1 if desc != backwards else 1 for name, desc in _sort_fields(query)}


def keyset_cond(query: SearchQuery, values: Sequence[Any], backwards: bool) -> Document:
    """Rows strictly after `values` (sort keys, type, id) in page order; mixed directions expanded."""
    fields = _sort_fields(query)
    ors = []
    for i, (name, desc) in enumerate(fields):
        cond: Document = {fields[j][0]: values[j] for j in range(i)}
        cond[name] = {"$lt" if desc != backwards else "$gt": values[i]}
        ors.append(cond)
    return any_of(ors)


def page_find(
    query: SearchQuery, resolved: Resolved, *, after: Sequence[Any] | None, backwards: bool
) -> tuple[Document, list[tuple[str, int]]]:
    """(filter, sort) of a page of an unsorted search: a plain find in (type, id) order, which the
    unique (type, id) index serves; only `_sort` needs the pipeline."""
    assert not query.sort
    conds = [match_filter(query.types, query.filters, resolved)]
    if after is not None:
        conds.append(keyset_cond(query, after, backwards))
    return all_of(conds), list(sort_spec(query, backwards).items())


def page_pipeline(
    query: SearchQuery,
    resolved: Resolved,
    *,
    after: Sequence[Any] | None,
    backwards: bool,
    limit: int,
) -> list[Document]:
    """The page query; `backwards` reads the previous page in reverse (the caller flips it back)."""
    stages: list[Document] = [{"$match": match_filter(query.types, query.filters, resolved)}]
    stages += sort_stages(query.sort)
    if after is not None:
        stages.append({"$match": keyset_cond(query, after, backwards)})
    stages += [{"$sort": sort_spec(query, backwards)}, {"$limit": limit}, {"$project": {"idx": 0}}]
    return stages


def row_keys(query: SearchQuery, doc: Document) -> list[Any]:
    """The keyset values of one result document (what a cursor carries)."""
    return [doc[name] for name, _desc in _sort_fields(query)]


def encode_cursor(direction: str, keys: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([direction, keys])).decode().rstrip("=")


def decode_cursor(token: str, query: SearchQuery) -> tuple[str, list[Any]]:
    try:
        direction, keys = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if direction not in ("n", "p") or not isinstance(keys, list):
            raise ValueError(token)
    except (ValueError, TypeError) as exc:
        raise InvalidSearch(f"Invalid paging cursor '{token}'") from exc
    if len(keys) != len(query.sort) + len(TIE_BREAK):
        raise InvalidSearch("Paging cursor does not belong to this search")
    return direction, keys
