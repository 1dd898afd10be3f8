"""Evaluate a `SearchQuery`'s filters in memory over extracted index entries.

This is the reference semantics: the memory store runs on it, subscriptions and conditional checks can
use it, and backend tests compare SQL results against it. `compile.py` of each backend mirrors these
rules one to one (same range formulas, same string normalisation).

Ranges: a resource value is [L, H) (dates; a point [v, v] for numbers), the search value [pl, ph) with
the precision of what was written. Dates follow R4 literally (eq: contained, gt: H > ph, ge: gt or eq ...);
numbers and quantities compare the written number exactly for gt/lt/ge/le/sa/eb and use the precision
range for eq/ne; `ap` overlaps a range widened by 10% (at least one day for dates).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from fhir_server.search.ast import (
    Chain,
    CompositeValue,
    Criterion,
    Filter,
    Has,
    MissingValue,
    RangeValue,
    ReferenceValue,
    SortKey,
    StringValue,
    TokenValue,
    UriValue,
    Value,
)
from fhir_server.search.index import IndexEntries

DAY_US = 86_400_000_000


@dataclass(frozen=True)
class Candidate:
    """What the evaluator needs of one current resource."""

    type: str
    id: str
    last_updated_us: int
    entries: IndexEntries


Resolver = Callable[[str, str], Candidate | None]
OfType = Callable[[str], Iterable[Candidate]]


def ap_window(v: RangeValue, kind: str) -> tuple[float, float]:
    if kind == "date":
        width = max(DAY_US, 0.1 * (v.high - v.low))
        return v.low - width, v.high + width
    delta = abs(v.value) * 0.1
    return v.value - delta, v.value + delta


def date_match(v: RangeValue, lo: float, hi: float) -> bool:
    p = v.prefix
    eq = lo >= v.low and hi <= v.high
    if p == "eq":
        return eq
    if p == "ne":
        return not eq
    if p == "gt":
        return hi > v.high
    if p == "lt":
        return lo < v.low
    if p == "ge":
        return hi > v.high or eq
    if p == "le":
        return lo < v.low or eq
    if p == "sa":
        return lo >= v.high
    if p == "eb":
        return hi <= v.low
    a, b = ap_window(v, "date")
    return lo < b and hi > a


def number_match(v: RangeValue, lo: float, hi: float) -> bool:
    p, x = v.prefix, v.value
    eq = lo >= v.low and hi <= v.high
    if p == "eq":
        return eq
    if p == "ne":
        return not eq
    if p == "gt":
        return hi > x
    if p == "lt":
        return lo < x
    if p == "ge":
        return hi >= x
    if p == "le":
        return lo <= x
    if p == "sa":
        return lo > x
    if p == "eb":
        return hi < x
    a, b = ap_window(v, "number")
    return lo <= b and hi >= a


def token_match(v: TokenValue, system: str, code: str, text: str) -> bool:
    if v.system is None and v.code is None:
        return v.text in text
    if v.code is not None and code != v.code:
        return False
    return v.system is None or system == v.system


def reference_match(v: ReferenceValue, rtype: str, rid: str, url: str) -> bool:
    if v.url:
        return url == v.url
    if rid != v.id or url:
        return False
    return v.type is None or rtype == v.type


def string_match(v: StringValue, modifier: str | None, norm: str, raw: str) -> bool:
    if modifier == "exact":
        return raw == v.value
    if modifier == "contains":
        return v.value in norm
    return norm.startswith(v.value)


def uri_match(v: UriValue, modifier: str | None, uri: str) -> bool:
    if modifier == "below":
        return uri.startswith(v.value)
    if modifier == "above":
        return v.value.startswith(uri)
    return uri == v.value


def composite_match(v: CompositeValue, row: tuple[int, str, str, str, float, float]) -> bool:
    _, system, code, key, lo, hi = row
    if not token_match(v.first, system, code, ""):
        return False
    if v.second_range is not None:
        r = v.second_range
        if v.second_kind == "quantity":
            if r.system is not None and not key.startswith(r.system + "|"):
                return False
            if r.code is not None and not key.endswith("|" + r.code):
                return False
        return date_match(r, lo, hi) if v.second_kind == "date" else number_match(r, lo, hi)
    assert v.second_key is not None
    if v.second_kind == "token-any":
        return key.endswith(v.second_key)
    if v.second_kind == "string":
        return key.startswith(v.second_key)
    return key == v.second_key


def _value_match(c: Criterion, value: Value, entries: IndexEntries, pids: set[int]) -> bool:
    kind = c.param.type
    if isinstance(value, TokenValue):
        return any(r[0] in pids and token_match(value, r[1], r[2], r[3]) for r in entries.tokens)
    if isinstance(value, StringValue):
        return any(r[0] in pids and string_match(value, c.modifier, r[1], r[2]) for r in entries.strings)
    if isinstance(value, ReferenceValue):
        return any(r[0] in pids and reference_match(value, r[1], r[2], r[3]) for r in entries.references)
    if isinstance(value, UriValue):
        return any(r[0] in pids and uri_match(value, c.modifier, r[1]) for r in entries.uris)
    if isinstance(value, CompositeValue):
        return any(r[0] in pids and composite_match(value, r) for r in entries.composites)
    if isinstance(value, RangeValue):
        if kind == "date":
            return any(r[0] in pids and date_match(value, r[1], r[2]) for r in entries.dates)
        if kind == "number":
            return any(r[0] in pids and number_match(value, r[1], r[2]) for r in entries.numbers)
        return any(
            r[0] in pids
            and (value.system is None or r[1] == value.system)
            and (value.code is None or r[2] == value.code)
            and number_match(value, r[3], r[4])
            for r in entries.quantities
        )
    return False


def criterion_match(c: Criterion, cand: Candidate) -> bool:
    if c.param.code == "_id":
        hit = any(isinstance(v, TokenValue) and v.code == cand.id for v in c.values)
        return not hit if c.modifier == "not" else hit
    if c.param.code == "_lastUpdated":
        lo = cand.last_updated_us
        return any(isinstance(v, RangeValue) and date_match(v, lo, lo + 1) for v in c.values)
    pids = set(c.param.pids)
    first = c.values[0]
    if isinstance(first, MissingValue):
        present = bool(pids & cand.entries.pids())
        return present != first.missing
    hit = any(_value_match(c, v, cand.entries, pids) for v in c.values)
    return not hit if c.modifier == "not" else hit


def filter_match(f: Filter, cand: Candidate, resolve: Resolver, of_type: OfType) -> bool:
    if isinstance(f, Criterion):
        return criterion_match(f, cand)
    if isinstance(f, Chain):
        pids = set(f.ref.pids)
        for row in cand.entries.references:
            if row[0] in pids and row[1] in f.target_types and not row[3]:
                target = resolve(row[1], row[2])
                if target is not None and filter_match(f.inner, target, resolve, of_type):
                    return True
        return False
    assert isinstance(f, Has)
    pids = set(f.ref.pids)
    for source in of_type(f.source_type):
        points_here = any(
            r[0] in pids and r[1] == cand.type and r[2] == cand.id and not r[3]
            for r in source.entries.references
        )
        if points_here and filter_match(f.inner, source, resolve, of_type):
            return True
    return False


def matches(filters: Iterable[Filter], cand: Candidate, resolve: Resolver, of_type: OfType) -> bool:
    return all(filter_match(f, cand, resolve, of_type) for f in filters)


STRING_MAX = "\U0010ffff"
NUM_MAX = 1e308
_SORT_ROWS = {
    "string": ("strings", 1),
    "token": ("tokens", 2),
    "reference": ("references", 2),
    "uri": ("uris", 1),
    "date": ("dates", 1),
    "number": ("numbers", 1),
    "quantity": ("quantities", 3),
}


def sort_value(key: SortKey, cand: Candidate) -> str | float | int:
    """The scalar a resource sorts by: its smallest value of the parameter (largest when descending,
    the high end for ranges); a resource without one sorts last. Mirrors sqlite compile.sort_sql."""
    code, desc = key.param.code, key.descending
    if code == "_id":
        return cand.id
    if code == "_lastUpdated":
        return cand.last_updated_us
    attr, col = _SORT_ROWS[key.param.type]
    textual = key.param.type in ("string", "token", "reference", "uri")
    if not textual and desc:
        col += 1  # high end
    pids = set(key.param.pids)
    values = [row[col] for row in getattr(cand.entries, attr) if row[0] in pids]
    if not values:
        if textual:
            return "" if desc else STRING_MAX
        return -NUM_MAX if desc else NUM_MAX
    best: str | float | int = max(values) if desc else min(values)
    return best
