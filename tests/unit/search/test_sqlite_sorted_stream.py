"""The index-ordered `_sort` stream returns exactly what the sorting page query returns, from the start
and from any cursor (SQLite, real data: R4 examples + generated resources)."""

from __future__ import annotations

from pathlib import Path

from fhir_server.search.parse import parse_search
from fhir_server.storage.sqlite.compile import compile_page, compile_sorted_stream
from fhir_server.storage.sqlite.search import _read_streams
from fhir_server.storage.sqlite.store import SqliteStore
from tests.contract.search_support import generated_resources, load, official_examples, shared_registry

SORTS = {
    "Patient": ["birthdate", "-birthdate", "family", "-family", "gender", "-identifier", "organization"],
    "Observation": [
        "date",
        "-date",
        "value-quantity",
        "-value-quantity",
        "code",
        "-code",
        "-status",
        "subject",
    ],
    "Encounter": ["date", "-date", "-class", "subject"],
}
FILTERS = {
    "Patient": [[], [("gender", "male")], [("name", "a")]],
    "Observation": [[], [("status", "final")], [("code", "8867-4")], [("subject:Patient.gender", "female")]],
    "Encounter": [[], [("status", "finished")]],
}


async def test_sorted_stream_equals_sorting_query(tmp_path: Path) -> None:
    registry = shared_registry()
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    try:
        data = [r for r in official_examples() if r["resourceType"] in SORTS] + generated_resources(5, 60)
        # sort-order edge cases: an empty code ties with "no code" when descending
        data += [
            {"resourceType": "Observation", "id": "text-only", "status": "final", "code": {"text": "x"}},
            {"resourceType": "Observation", "id": "no-code", "status": "final"},
            {"resourceType": "Observation", "id": "text-only-2", "status": "final", "code": {"text": "y"}},
        ]
        await load(store, data, registry)
        conn = store._read  # noqa: SLF001 - compares two compiled forms on the store's own connection
        checked = 0
        for rtype, sorts in SORTS.items():
            for sort in sorts:
                for filters in FILTERS[rtype]:
                    query = parse_search(rtype, [*filters, ("_sort", sort)], registry, strict=True)
                    full_sql = compile_page(query, driver=None, after=None, backwards=False, limit=10_000)
                    full = conn.execute(full_sql.text, full_sql.params).fetchall()
                    streams = compile_sorted_stream(query, None)
                    assert streams is not None
                    assert _read_streams(conn, streams, 10_000) == full, (rtype, sort, filters)
                    for k in range(len(full)):
                        after = ([full[k][3]], full[k][0])
                        page = compile_page(query, driver=None, after=after, backwards=False, limit=7)
                        expected = conn.execute(page.text, page.params).fetchall()
                        streams = compile_sorted_stream(query, after)
                        assert streams is not None
                        assert _read_streams(conn, streams, 7) == expected, (rtype, sort, filters, k)
                        checked += 1
        assert checked > 1000
    finally:
        await store.close()


async def test_stream_over_budget_falls_back_to_sorting(tmp_path: Path, monkeypatch) -> None:
    import fhir_server.storage.sqlite.search as sqlite_search

    registry = shared_registry()
    store = SqliteStore(tmp_path / "b.db")
    await store.open()
    try:
        await load(store, generated_resources(9, 40), registry)
        query = parse_search(
            "Observation", [("status", "final"), ("_sort", "-date"), ("_count", "5")], registry, strict=True
        )
        streamed = await store.search(query)
        conn = store._read  # noqa: SLF001
        assert sqlite_search._read_streams_bounded(conn, compile_sorted_stream(query, None), 6) is not None
        monkeypatch.setattr(sqlite_search, "STREAM_BUDGET_S", -1.0)  # every stream is over budget
        assert sqlite_search._read_streams_bounded(conn, compile_sorted_stream(query, None), 6) is None
        sorted_page = await store.search(query)
        assert [v.id for v in sorted_page.resources] == [v.id for v in streamed.resources]
        assert sorted_page.next_cursor == streamed.next_cursor
    finally:
        await store.close()
