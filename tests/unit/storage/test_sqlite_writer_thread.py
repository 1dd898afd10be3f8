"""A write section's rows go to SQLite as multi-row statements, run on the event loop when the section
is small and ends, or on the writer thread while it goes on (`ship_rows`) and before COMMIT. These tests
check that no row is lost or duplicated on either path, that reads inside a section and its commit group
see what was written before them, that a statement failing on the thread fails its section (or, once
the section has ended, its group) and nothing else, that row ids carry on across groups, restarts and
other writers, and that a SQLite built with a low parameter limit still works."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from fhir_server.errors import StorageError
from fhir_server.search.extract import extract
from fhir_server.search.parse import parse_search
from fhir_server.storage.protocol import HistoryRequest, NewVersion
from fhir_server.storage.sqlite.index import bulk_inserts, multi_row_inserts, run_statements
from fhir_server.storage.sqlite.schema import schema_ddl
from fhir_server.storage.sqlite.store import SqliteStore
from tests.contract.search_support import shared_registry


@pytest.mark.parametrize("count", [0, 1, 3, 4, 5, 17, 64, 1300, 2051])
@pytest.mark.parametrize("max_params", [32766, 999])
def test_bulk_inserts_write_every_row_once(count: int, max_params: int) -> None:
    conn = sqlite3.connect(":memory:")
    conn.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, max_params)
    for ddl in schema_ddl():
        conn.execute(ddl)
    rows: list[tuple[object, ...]] = [(7, "urn:s", f"c{i}", "", i % 50) for i in range(count)]
    statements = bulk_inserts("idx_token", [v for row in rows for v in row], max_params)
    assert all(len(params) <= max_params for _sql, params in statements)
    largest = 1024 if max_params > 1024 * 5 else 128
    assert len(statements) == -(-count // largest)  # one per chunk: the last is padded
    run_statements(conn, statements)
    stored = conn.execute(
        "SELECT param, system, code, text, rid FROM idx_token ORDER BY rid, code"
    ).fetchall()
    assert sorted(stored, key=lambda r: (r[4], r[2])) == sorted(rows, key=lambda r: (r[4], r[2]))


@pytest.mark.parametrize("count", [1, 3, 17, 1300])
def test_multi_row_inserts_without_padding_insert_each_row_once(count: int) -> None:
    """Versions are never padded (a repeated row would be a duplicate key): the chunks add up."""
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
    rows: list[tuple[object, ...]] = [(i, f"v{i}") for i in range(count)]
    statements = multi_row_inserts("INSERT INTO t (k, v)", [v for row in rows for v in row], 2, 999)
    largest = 256  # two columns under a limit of 999 parameters
    assert len(statements) == count // largest + (count % largest).bit_count()
    run_statements(conn, statements)
    assert conn.execute("SELECT k, v FROM t ORDER BY k").fetchall() == rows


def _patient(version: int, value: str | None, resource_id: str = "p1") -> NewVersion:
    if value is None:
        return NewVersion(
            "Patient", resource_id, version, f"2026-01-01T00:00:0{version}Z", "DELETE", None, None
        )
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "id": resource_id,
        "identifier": [{"system": "urn:t", "value": value}],
    }
    return NewVersion(
        "Patient",
        resource_id,
        version,
        f"2026-01-01T00:00:0{version}Z",
        "PUT",
        body,
        extract(body, shared_registry()),
    )


async def _found(store: SqliteStore, value: str) -> list[str]:
    query = parse_search("Patient", [("identifier", f"urn:t|{value}")], shared_registry(), strict=True)
    return [v.id for v in (await store.search(query)).resources]


THREAD = {"thread_rows": 0, "ship_rows": 1}  # every write goes to the writer thread at once
PATHS = pytest.mark.parametrize("options", [THREAD, {}], ids=["writer-thread", "loop"])


@PATHS
async def test_sections_of_one_commit_group_see_and_replace_each_others_writes(
    tmp_path: Path, options: dict[str, int]
) -> None:
    """Three writers queue for the lock: they share one commit group. The second section's search finds
    the first's rows and its read sees the first's version (not yet committed, so not in the committed
    state other reads use); its update replaces them. A third section that fails leaves the second's
    rows in place. On the thread path the first's rows may still be in flight when the second starts."""
    store = SqliteStore(tmp_path / "g.db", **options)
    await store.open()
    try:
        seen: list[list[tuple[str, str]]] = []
        read: list[int | None] = []
        query = parse_search("Patient", [("identifier", "urn:t|a")], shared_registry(), strict=True)

        async def first() -> None:
            async with store.write() as tx:
                await tx.write_version(_patient(1, "a"))
                await asyncio.sleep(0)  # let the others queue behind the lock

        async def second() -> None:
            async with store.write() as tx:
                seen.append(await tx.search_ids(query, 2))
                current = await tx.current("Patient", "p1")
                read.append(current.version if current else None)
                await tx.write_version(_patient(2, "b"))

        async def third() -> None:
            async with store.write() as tx:
                await tx.write_version(_patient(3, "c"))
                raise RuntimeError("this section fails")

        results = await asyncio.gather(first(), second(), third(), return_exceptions=True)
        assert list(results[:2]) == [None, None] and isinstance(results[2], RuntimeError)
        assert seen == [[("Patient", "p1")]] and read == [1]
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
    store = SqliteStore(tmp_path / "f.db", thread_rows=0)
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


async def _refuse_boom(store: SqliteStore) -> None:
    assert store._writer is not None
    store._writer.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON idx_token WHEN NEW.code = 'boom'"
        " BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
    )


async def test_a_statement_failing_on_the_thread_fails_only_its_own_section(tmp_path: Path) -> None:
    """The failure reaches the section at its next read, while it still runs: it is rolled back to its
    savepoint and the group's other sections commit."""
    store = SqliteStore(tmp_path / "s.db", **THREAD)
    await store.open()
    try:
        await _refuse_boom(store)
        query = parse_search("Patient", [("identifier", "urn:t|x")], shared_registry(), strict=True)

        async def good() -> None:
            async with store.write() as tx:
                await tx.write_version(_patient(1, "ok", "good"))
                await asyncio.sleep(0)

        async def bad() -> None:
            async with store.write() as tx:
                await tx.write_version(_patient(1, "boom", "bad"))
                await tx.search_ids(query, 1)  # waits for the thread: the failure surfaces here
                raise AssertionError("the search should have failed")

        results = await asyncio.gather(good(), bad(), return_exceptions=True)
        assert results[0] is None and isinstance(results[1], StorageError), results
        assert "refused by test" in str(results[1])
        assert (await _found(store, "ok"), await _found(store, "boom")) == (["good"], [])
        assert await store.current("Patient", "bad") is None
    finally:
        await store.close()


async def test_row_ids_carry_on_across_restarts_and_other_writers(tmp_path: Path) -> None:
    """Row ids are handed out by the store: after a restart, and after another connection to the same
    file has written, new rows take fresh ids (no unique-key failure) and versions keep their order."""
    path = tmp_path / "ids.db"
    first, second = SqliteStore(path, **THREAD), SqliteStore(path)
    await first.open()
    await second.open()
    try:
        for n, store in enumerate([first, second, first, second, first]):
            async with store.write() as tx:
                await tx.write_version(_patient(1, f"v{n}", f"p{n}"))
                if n:
                    await tx.write_version(_patient(n + 1, f"w{n}", "p0"))
        await first.close()
        first = SqliteStore(path, **THREAD)
        await first.open()
        async with first.write() as tx:
            await tx.write_version(_patient(1, "v5", "p5"))
        for n in range(1, 6):
            assert await _found(first, f"v{n}") == [f"p{n}"]
        p0 = await first.current("Patient", "p0")
        assert p0 is not None and p0.version == 5 and await _found(first, "w4") == ["p0"]
        seqs = [v.seq for v in await first.history(HistoryRequest(resource_type="Patient", count=20))]
        assert seqs == sorted(seqs, reverse=True) and len(set(seqs)) == len(seqs) == 10
    finally:
        await first.close()
        await second.close()


@PATHS
async def test_a_value_sqlite_cannot_bind_fails_its_write_and_the_store_goes_on(
    tmp_path: Path, options: dict[str, int]
) -> None:
    """Not only SQLite's own errors: a row SQLite cannot bind (here an integer beyond 64 bits) fails the
    write with StorageError on both paths, and nothing of it is stored."""
    store = SqliteStore(tmp_path / "b.db", **options)
    await store.open()
    try:
        bad = _patient(1, "big", "big")
        assert bad.index is not None
        bad.index.numbers.append((1, 2**70, 2**70))
        with pytest.raises(StorageError):
            async with store.write() as tx:
                await tx.write_version(bad)
        assert await store.current("Patient", "big") is None
        async with store.write() as tx:
            await tx.write_version(_patient(1, "fine", "fine"))
        assert await _found(store, "fine") == ["fine"]
    finally:
        await store.close()


async def test_a_writer_cancelled_as_its_commit_completes_is_cancelled(tmp_path: Path) -> None:
    """The commit is waited for under the lock even when its writer is cancelled; a cancellation that
    arrives just as the commit completes must still reach the writer. It was swallowed, and the audit
    writer, cancelled that way at shutdown, went back to sleep for its whole interval."""
    store = SqliteStore(tmp_path / "c.db")
    await store.open()
    assert store._thread is not None
    thread = store._thread
    held: list[asyncio.Future[None]] = []

    def submit(work: Any) -> asyncio.Future[None]:
        work()  # COMMIT now (the writer thread is idle): the group is answered
        held.append(asyncio.get_running_loop().create_future())
        return held[-1]

    async def writer() -> None:
        async with store.write() as tx:
            await tx.write_version(_patient(1, "x", "c1"))

    thread.submit = submit  # type: ignore[method-assign]
    try:
        task = asyncio.create_task(writer())
        while not held:
            await asyncio.sleep(0)
        held[0].set_result(None)  # the commit completes...
        task.cancel()  # ...and the writer is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await store.current("Patient", "c1") is not None  # committed all the same
    finally:
        del thread.submit
        await store.close()
