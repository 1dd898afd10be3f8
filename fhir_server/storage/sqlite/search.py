"""Run compiled search plans on a sqlite3 connection: driver choice, keyset pages, totals, bodies.

The only impure step of SQLite search. It chooses the driving filter by probing how many index rows
each drivable filter has (capped), because SQLite has no statistics on our index tables worth trusting:
a selective filter (identifier, subject) drives from its index; when every filter matches many rows the
query walks resources in rid order and stops at the page size instead.
"""

from __future__ import annotations

import base64
import logging
import sqlite3
import time
from typing import Any

import orjson

from fhir_server.errors import InvalidSearch
from fhir_server.search.ast import Chain, Filter, Has, SearchQuery
from fhir_server.storage.protocol import SearchPage, StoredVersion
from fhir_server.storage.sqlite.compile import (
    Sql,
    compile_count,
    compile_page,
    compile_sorted_stream,
    drivable,
    driver_probe,
)

LOGGER = logging.getLogger(__name__)

PROBE_LIMIT = 2000
MAX_PROBES = 3
# the sorted stream gives up after this long (checked every TICK_INSTRUCTIONS SQLite VM steps) and the
# page is sorted instead: bounded extra cost when the filters are rare along the sort order
STREAM_BUDGET_S = 0.02
TICK_INSTRUCTIONS = 1000


def encode_cursor(direction: str, values: list[Any], rid: int) -> str:
    raw = orjson.dumps([direction, values, rid])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[str, list[Any], int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        direction, values, rid = orjson.loads(raw)
        if direction not in ("n", "p") or not isinstance(values, list) or not isinstance(rid, int):
            raise ValueError(token)
        return direction, values, rid
    except (ValueError, TypeError) as exc:
        raise InvalidSearch(f"Invalid paging cursor '{token}'") from exc


class ProbeCache:
    """Recent probe counts of chained filters (`Chain`, `Has`), which are costly to probe (a join per
    row, up to `PROBE_LIMIT` rows) and come back in query after query: a member client's view filter
    (`interactions/member_view.py`) is in every search it makes. A count only steers the choice of
    driver, so one a few seconds old is good enough; a zero is never kept, as a zero ends the search.
    Shared by the reader threads (dict operations are atomic under the GIL)."""

    def __init__(self, ttl: float = 10.0, size: int = 1024) -> None:
        self.ttl = ttl
        self.size = size
        self._counts: dict[tuple[Any, ...], tuple[int, float]] = {}

    def get(self, key: tuple[Any, ...]) -> int | None:
        found = self._counts.get(key)
        if found is None or found[1] < time.monotonic():
            return None
        return found[0]

    def put(self, key: tuple[Any, ...], n: int) -> None:
        if n == 0:
            return
        if len(self._counts) >= self.size:
            self._counts.pop(next(iter(self._counts)), None)
        self._counts[key] = (n, time.monotonic() + self.ttl)


SELECTIVE_ENOUGH = 100
"""A driver this selective needs no better one: further probes would cost more than they save."""


def _probe(conn: sqlite3.Connection, f: Filter, types: tuple[str, ...], cache: ProbeCache | None) -> int:
    """How many rows (up to `PROBE_LIMIT`) filter `f` drives from; a chained filter's count is cached."""
    if cache is None or not isinstance(f, Chain | Has):
        return _count_probe(conn, f, types)
    key = (f, types)
    n = cache.get(key)
    if n is None:
        n = _count_probe(conn, f, types)
        cache.put(key, n)
    return n


def _count_probe(conn: sqlite3.Connection, f: Filter, types: tuple[str, ...]) -> int:
    sql = driver_probe(f, types, PROBE_LIMIT)
    (n,) = conn.execute(sql.text, sql.params).fetchone()
    return int(n)


def choose_driver(
    conn: sqlite3.Connection, query: SearchQuery, cache: ProbeCache | None = None
) -> tuple[int | None, bool]:
    """Index of the most selective drivable filter (None when all of them match many rows), and
    whether one of them matched nothing: filters are ANDed, so then nothing matches at all. That is
    the usual answer for conditional creates of new resources, and it saves the page query. Plain
    filters are probed first (cheap, and often selective enough to stop), chained ones after."""
    best: tuple[int, int] | None = None
    probes = 0
    order = sorted(range(len(query.filters)), key=lambda i: isinstance(query.filters[i], Chain | Has))
    for i in order:
        f = query.filters[i]
        if not drivable(f):
            continue
        if probes == MAX_PROBES or (best is not None and best[1] <= SELECTIVE_ENOUGH):
            break
        probes += 1
        n = _probe(conn, f, query.types, cache)
        if n < PROBE_LIMIT and (best is None or n < best[1]):
            best = (i, n)
            if n == 0:
                return i, True
    return (None if best is None else best[0]), False


def _page_rows(
    conn: sqlite3.Connection,
    query: SearchQuery,
    limit: int,
    cursor: str | None,
    cache: ProbeCache | None = None,
) -> tuple[list[tuple[Any, ...]], bool, bool]:
    """(rows in page order, more after, more before)."""
    driver, empty = choose_driver(conn, query, cache)
    if empty and not cursor:
        return [], False, False
    after: tuple[list[Any], int] | None = None
    backwards = False
    if cursor:
        direction, values, rid = decode_cursor(cursor)
        if len(values) != len(query.sort):
            raise InvalidSearch("Paging cursor does not belong to this search")
        after, backwards = (values, rid), direction == "p"
    streams = compile_sorted_stream(query, after) if driver is None and not backwards else None
    rows = _read_streams_bounded(conn, streams, limit + 1) if streams is not None else None
    if rows is None:
        sql = compile_page(query, driver=driver, after=after, backwards=backwards, limit=limit + 1)
        rows = conn.execute(sql.text, sql.params).fetchall()
        if driver is not None and not query.sort and not _in_rid_order(rows, backwards):
            LOGGER.warning("SQLite returned a driven page out of rid order; sorting it instead")
            sql = compile_page(
                query, driver=driver, after=after, backwards=backwards, limit=limit + 1, in_driver_order=False
            )
            rows = conn.execute(sql.text, sql.params).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    if backwards:
        rows.reverse()
        return rows, True, more
    return rows, more, after is not None


def _in_rid_order(rows: list[tuple[Any, ...]], backwards: bool) -> bool:
    rids = [row[0] for row in rows]
    return rids == sorted(rids, reverse=backwards)


def _read_streams(conn: sqlite3.Connection, streams: tuple[Sql, ...], wanted: int) -> list[tuple[Any, ...]]:
    """Up to `wanted` distinct resources from ordered streams, read lazily (SQLite stops when we do)."""
    rows: list[tuple[Any, ...]] = []
    seen: set[int] = set()
    for sql in streams:
        cur = conn.execute(sql.text, sql.params)
        while len(rows) < wanted:
            batch = cur.fetchmany(wanted)
            if not batch:
                break
            for row in batch:
                if row[0] not in seen and len(rows) < wanted:
                    seen.add(row[0])
                    rows.append(row)
        cur.close()
        if len(rows) >= wanted:
            break
    return rows


def _read_streams_bounded(
    conn: sqlite3.Connection, streams: tuple[Sql, ...], wanted: int
) -> list[tuple[Any, ...]] | None:
    """`_read_streams` within a work budget, or None when the filters are so rare along the sort order
    (say, the largest values all belong to other codes) that sorting the matches is cheaper."""
    deadline = time.perf_counter() + STREAM_BUDGET_S

    def progress() -> int:
        return int(time.perf_counter() > deadline)

    conn.set_progress_handler(progress, TICK_INSTRUCTIONS)
    try:
        return _read_streams(conn, streams, wanted)
    except sqlite3.OperationalError as exc:
        if "interrupt" not in str(exc):
            raise
        LOGGER.debug("sorted stream over budget; sorting the matches instead")
        return None
    finally:
        conn.set_progress_handler(None, 0)


def _cursor_of(row: tuple[Any, ...], direction: str, nkeys: int) -> str:
    return encode_cursor(direction, list(row[3 : 3 + nkeys]), row[0])


def load_current(conn: sqlite3.Connection, rids: list[int]) -> list[StoredVersion]:
    """Current versions of `rids`, in the given order."""
    if not rids:
        return []
    marks = ", ".join("?" * len(rids))
    rows = conn.execute(
        "SELECT r.rid, v.type, v.id, v.version, v.last_updated, v.method, v.body, v.seq "
        f"FROM resource r JOIN version v ON v.seq = r.seq WHERE r.rid IN ({marks})",
        rids,
    ).fetchall()
    by_rid = {
        row[0]: StoredVersion(
            row[1], row[2], row[3], row[4], row[5], orjson.loads(row[6]) if row[6] else None, row[7]
        )
        for row in rows
    }
    return [by_rid[rid] for rid in rids if rid in by_rid]


def count_matches(conn: sqlite3.Connection, query: SearchQuery, cache: ProbeCache | None = None) -> int:
    driver, empty = choose_driver(conn, query, cache)
    if empty:
        return 0
    sql = compile_count(query, driver)
    (n,) = conn.execute(sql.text, sql.params).fetchone()
    return int(n)


def execute_search(
    conn: sqlite3.Connection, query: SearchQuery, cache: ProbeCache | None = None
) -> SearchPage:
    """One page of `query` (its cursor decides which), with the total when asked for."""
    total = count_matches(conn, query, cache) if query.wants_total else None
    if query.count == 0 or query.summary == "count":
        return SearchPage([], total, None, None)
    rows, more_after, more_before = _page_rows(conn, query, query.count, query.cursor, cache)
    nkeys = len(query.sort)
    resources = load_current(conn, [row[0] for row in rows])
    next_cursor = _cursor_of(rows[-1], "n", nkeys) if rows and more_after else None
    prev_cursor = _cursor_of(rows[0], "p", nkeys) if rows and more_before else None
    return SearchPage(resources, total, next_cursor, prev_cursor)


def search_ids(conn: sqlite3.Connection, query: SearchQuery, limit: int) -> list[tuple[str, str]]:
    """(type, id) of up to `limit` current matches: what conditional create/update/delete need."""
    rows, _more, _before = _page_rows(conn, query, limit, None)
    return [(row[1], row[2]) for row in rows]


def search_rids(conn: sqlite3.Connection, query: SearchQuery, limit: int) -> list[int]:
    rows, _more, _before = _page_rows(conn, query, limit, None)
    return [row[0] for row in rows]
