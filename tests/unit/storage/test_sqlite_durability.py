"""SQLite write durability: a group's fsync level is chosen at BEGIN, a durable writer never rides in a
non-durable group, and `sync()` makes earlier non-durable commits durable with one FULL commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from fhir_server.search.index import IndexEntries
from fhir_server.storage.protocol import NewVersion
from fhir_server.storage.sqlite.store import SqliteStore

_LEVELS = {1: "NORMAL", 2: "FULL"}


def _patient(rid: str) -> NewVersion:
    body = {"resourceType": "Patient", "id": rid}
    return NewVersion("Patient", rid, 1, "2026-01-01T00:00:00.000Z", "PUT", body, IndexEntries("Patient"))


def _level(store: SqliteStore) -> str:
    """The writer connection's synchronous level inside the open section (what its COMMIT will do)."""
    assert store._writer is not None
    return _LEVELS[store._writer.execute("PRAGMA synchronous").fetchone()[0]]


def _sync_points(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute("SELECT count(*) FROM sync_point").fetchone()[0])


async def test_levels_follow_the_writer_and_sync_marks_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    try:
        async with store.write(durable=False) as tx:
            assert _level(store) == "NORMAL"
            await tx.write_version(_patient("a"))
        async with store.write() as tx:
            assert _level(store) == "FULL"
            await tx.write_version(_patient("b"))
        await store.sync()  # the durable commit already covered "a": nothing to do
        assert _sync_points(tmp_path / "s.db") == 0
        async with store.write(durable=False) as tx:
            await tx.write_version(_patient("c"))
        await store.sync()
        assert _sync_points(tmp_path / "s.db") == 1
        assert (await store.current("Patient", "c")) is not None
    finally:
        await store.close()


async def test_durable_writer_waiting_on_a_non_durable_group_gets_its_own(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    await store.open()
    levels: dict[str, str] = {}
    entered = asyncio.Event()

    async def writer(name: str, durable: bool, hold: bool) -> None:
        async with store.write(durable=durable) as tx:
            levels[name] = _level(store)
            await tx.write_version(_patient(name))
            if hold:
                entered.set()
                await asyncio.sleep(0.05)  # the others queue up behind this section's group

    try:
        first = asyncio.create_task(writer("lazy1", False, True))
        await entered.wait()
        await asyncio.gather(first, writer("lazy2", False, False), writer("strict", True, False))
        assert levels == {"lazy1": "NORMAL", "lazy2": "NORMAL", "strict": "FULL"}
        assert all([await store.current("Patient", n) for n in levels])
    finally:
        await store.close()
