"""Run search plans over in-memory resources with the reference evaluator (`search/match.py`).

Order and paging mirror SQLite: sort keys, then a stable tie-break; the cursor is the last row's keys
(keyset), so pages stay consistent while other writes land. The tie-break here is (type, id) because the
memory store has no row ids.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from typing import Any

import orjson

from fhir_server.errors import InvalidSearch
from fhir_server.search.ast import SearchQuery
from fhir_server.search.index import IndexEntries
from fhir_server.search.match import Candidate, matches, sort_value
from fhir_server.search.values import instant_us
from fhir_server.storage.protocol import SearchPage, StoredVersion

Live = Iterable[tuple[StoredVersion, IndexEntries | None]]
Row = tuple[Candidate, StoredVersion]


class _View:
    """Current resources by key and by type: what chains and _has resolve against."""

    def __init__(self, live: Live) -> None:
        self.by_key: dict[tuple[str, str], Row] = {}
        self.by_type: dict[str, list[Candidate]] = {}
        for version, entries in live:
            if version.body is None:
                continue
            cand = Candidate(
                version.resource_type,
                version.id,
                instant_us(version.last_updated) or 0,
                entries or IndexEntries(version.resource_type),
            )
            self.by_key[(cand.type, cand.id)] = (cand, version)
            self.by_type.setdefault(cand.type, []).append(cand)

    def resolve(self, rtype: str, rid: str) -> Candidate | None:
        row = self.by_key.get((rtype, rid))
        return None if row is None else row[0]

    def of_type(self, rtype: str) -> list[Candidate]:
        return self.by_type.get(rtype, [])


def _key(query: SearchQuery, cand: Candidate) -> list[Any]:
    return [sort_value(k, cand) for k in query.sort] + [cand.type, cand.id]


class _Desc:
    """Inverts comparison so one tuple sort handles mixed directions."""

    __slots__ = ("v",)

    def __init__(self, v: Any) -> None:
        self.v = v

    def __lt__(self, other: _Desc) -> bool:
        return bool(self.v > other.v)

    def __gt__(self, other: _Desc) -> bool:
        return bool(self.v < other.v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Desc) and bool(self.v == other.v)

    def __hash__(self) -> int:
        return hash(self.v)


def _order(query: SearchQuery, key: list[Any]) -> tuple[Any, ...]:
    dirs = [k.descending for k in query.sort] + [False, False]
    return tuple(_Desc(v) if d else v for v, d in zip(key, dirs, strict=True))


def _cursor(direction: str, key: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([direction, key])).decode().rstrip("=")


def _decode(token: str) -> tuple[str, list[Any]]:
    try:
        direction, key = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if direction not in ("n", "p") or not isinstance(key, list):
            raise ValueError(token)
        return direction, key
    except (ValueError, TypeError) as exc:
        raise InvalidSearch(f"Invalid paging cursor '{token}'") from exc


def _matching(view: _View, query: SearchQuery) -> list[Row]:
    types = set(query.types)
    out = [
        row
        for row in view.by_key.values()
        if row[0].type in types and matches(query.filters, row[0], view.resolve, view.of_type)
    ]
    out.sort(key=lambda row: _order(query, _key(query, row[0])))
    return out


def execute_search(live: Live, query: SearchQuery) -> SearchPage:
    view = _View(live)
    rows = _matching(view, query)
    total = len(rows) if query.wants_total else None
    if query.count == 0 or query.summary == "count":
        return SearchPage([], total, None, None)
    start, stop = 0, query.count
    if query.cursor:
        direction, key = _decode(query.cursor)
        if len(key) != len(query.sort) + 2:
            raise InvalidSearch("Paging cursor does not belong to this search")
        pivot = _order(query, key)
        orders = [_order(query, _key(query, row[0])) for row in rows]
        if direction == "n":
            start = next((i for i, o in enumerate(orders) if o > pivot), len(rows))
            stop = start + query.count
        else:
            stop = next((i for i, o in enumerate(orders) if not o < pivot), len(rows))
            start = max(0, stop - query.count)
    page = rows[start:stop]
    next_cursor = _cursor("n", _key(query, page[-1][0])) if page and stop < len(rows) else None
    prev_cursor = _cursor("p", _key(query, page[0][0])) if page and start > 0 else None
    return SearchPage([row[1] for row in page], total, next_cursor, prev_cursor)


def search_ids(live: Live, query: SearchQuery, limit: int) -> list[tuple[str, str]]:
    rows = _matching(_View(live), query)
    return [(row[0].type, row[0].id) for row in rows[:limit]]
