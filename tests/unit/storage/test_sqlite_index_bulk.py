"""Index rows go to SQLite as multi-row INSERTs, and a section's rows are inserted after it ends (by the
commit thread, or before the next section of the same commit group starts). These tests check that no
row is lost or duplicated on either path, and that a SQLite built with a low parameter limit still works."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fhir_server.errors import StorageError
from fhir_server.search.extract import extract
from fhir_server.search.parse import parse_search
from fhir_server.storage.protocol import NewVersion
from fhir_server.storage.sqlite.index import bulk_inserts, run_statements
from fhir_server.storage.sqlite.schema import schema_ddl
from fhir_server.storage.sqlite.store import THREAD_INDEX_ROWS, SqliteStore
from tests.contract.search_support import shared_registry


@pytest.mark.parametrize("count", [0, 1, 3, 4, 5, 17, 64, 1300, 2051])
@pytest.mark.parametrize("max_params", [32766, 999])
def test_bulk_inserts_write_every_row_once(count: int, max_params: int) -> None:
    conn = sqlite3.connect(":memory:")
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, max_params)
    for ddl in schema_ddl():
        conn.execute(ddl)
    rows: list[tuple[object, ...]] = [(7, "urn:s", f"c{i}", "", i % 50) for i in range(count)]
    statements = bulk_inserts("idx_token", rows, max_params)
    assert all(len(params) <= max_params for _sql, params in statements)
    largest = 1024 if max_params > 1024 * 5 else 128
    assert len(statements) <= count // largest + 7  # a handful, not one per row
    run_statements(conn, statements)
    stored = conn.execute(
        "SELECT param, system, code, text, rid FROM idx_token ORDER BY rid, code"
    ).fetchall()
    assert sorted(stored, key=lambda r: (r[4], r[2])) == sorted(rows, key=lambda r: (r[4], r[2]))


def _patient(version: int, value: str | None) -> NewVersion:
    if value is None:
        return NewVersion("Patient", "p1", version, f"2026-01-01T00:00:0{version}Z", "DELETE", None, None)
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": "urn:t", "value": value}],
    }
    return NewVersion(
        "Patient",
        "p1",
        version,
        f"2026-01-01T00:00:0{version}Z",
        "PUT",
        body,
        extract(body, shared_registry()),
    )


async def _found(store: SqliteStore, value: str) -> list[str]:
    query = parse_search("Patient", [("identifier", f"urn:t|{value}")], shared_registry(), strict=True)
    return [v.id for v in (await store.search(query)).resources]


@pytest.mark.parametrize("thread_rows", [0, THREAD_INDEX_ROWS], ids=["commit-thread", "loop"])
async def test_sections_of_one_commit_group_see_and_replace_each_others_index(
    tmp_path: Path, thread_rows: int
) -> None:
    """Three writers queue for the lock: they share one commit group. With the commit thread inserting
    index rows (`thread_rows` 0: every section counts as large), the first section's rows are inserted
    when the second starts, so its search finds them and its update replaces them; a third section that
    fails leaves the second's rows in place. Small sections insert their rows themselves: same answers."""
    store = SqliteStore(tmp_path / "g.db", thread_index_rows=thread_rows)
    await store.open()
    try:
        seen: list[list[tuple[str, str]]] = []
        query = parse_search("Patient", [("identifier", "urn:t|a")], shared_registry(), strict=True)

        async def first() -> None:
            async with store.write() as tx:
                await tx.write_version(_patient(1, "a"))
                await asyncio.sleep(0)  # let the others queue behind the lock

        async def second() -> None:
            async with store.write() as tx:
                seen.append(await tx.search_ids(query, 2))
                await tx.write_version(_patient(2, "b"))

        async def third() -> None:
            async with store.write() as tx:
                await tx.write_version(_patient(3, "c"))
                raise RuntimeError("this section fails")

        results = await asyncio.gather(first(), second(), third(), return_exceptions=True)
        assert list(results[:2]) == [None, None] and isinstance(results[2], RuntimeError)
        assert seen == [[("Patient", "p1")]]
        assert (await _found(store, "a"), await _found(store, "b"), await _found(store, "c")) == (
            [],
            ["p1"],
            [],
        )
    finally:
        await store.close()


async def test_a_failing_index_insert_fails_the_whole_group(tmp_path: Path) -> None:
    """Rows that cannot be inserted after their section ended fail its commit group: every writer in
    it gets the error and nothing of the group is stored."""
    store = SqliteStore(tmp_path / "f.db", thread_index_rows=0)
    await store.open()
    try:
        assert store._writer is not None
        store._writer.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON idx_token WHEN NEW.code = 'boom'"
            " BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
        )

        async def writer(value: str) -> None:
            async with store.write() as tx:
                body = {
                    "resourceType": "Patient",
                    "id": value,
                    "identifier": [{"system": "urn:t", "value": value}],
                }
                await tx.write_version(
                    NewVersion(
                        "Patient",
                        value,
                        1,
                        "2026-01-01T00:00:00Z",
                        "POST",
                        body,
                        extract(body, shared_registry()),
                    )
                )
                await asyncio.sleep(0)

        results = await asyncio.gather(writer("boom"), writer("ok"), return_exceptions=True)
        assert all(isinstance(r, StorageError) for r in results), results
        assert (await _found(store, "boom"), await _found(store, "ok")) == ([], [])
        await writer("later")  # the store goes on
        assert await _found(store, "later") == ["later"]
    finally:
        await store.close()
