"""Storage primitives: versions, tombstones, history order, atomic rollback, serialised writes."""

from __future__ import annotations

import asyncio

import pytest

from fhir_server.search.index import IndexEntries
from fhir_server.storage.protocol import HistoryRequest, NewVersion, ResourceStore


def _version(rid: str, version: int, *, at: str, body: dict | None = None, method: str = "PUT") -> NewVersion:
    resource = None
    if body is not None or method != "DELETE":
        resource = {
            "resourceType": "Patient",
            "id": rid,
            "meta": {"versionId": str(version), "lastUpdated": at},
        }
        resource.update(body or {})
    return NewVersion(
        "Patient", rid, version, at, method, resource, IndexEntries("Patient") if resource else None
    )


async def test_write_then_read_current_and_versions(store: ResourceStore) -> None:
    async with store.write() as tx:
        assert await tx.current("Patient", "a") is None
        await tx.write_version(
            _version("a", 1, at="2026-01-01T00:00:00.000Z", body={"gender": "male"}, method="POST")
        )
        seen = await tx.current("Patient", "a")
        assert seen is not None and seen.version == 1  # own writes are visible inside the section
    async with store.write() as tx:
        await tx.write_version(_version("a", 2, at="2026-01-02T00:00:00.000Z", body={"gender": "female"}))
    current = await store.current("Patient", "a")
    assert current is not None and current.version == 2 and current.body["gender"] == "female"
    first = await store.version("Patient", "a", 1)
    assert first is not None and first.body["gender"] == "male"
    assert await store.version("Patient", "a", 3) is None
    assert [v.id for v in await store.current_many([("Patient", "a"), ("Patient", "nope")])] == ["a"]


async def test_tombstone(store: ResourceStore) -> None:
    async with store.write() as tx:
        await tx.write_version(_version("d", 1, at="2026-01-01T00:00:00.000Z", method="POST"))
    async with store.write() as tx:
        await tx.write_version(_version("d", 2, at="2026-01-01T00:00:01.000Z", method="DELETE"))
    current = await store.current("Patient", "d")
    assert current is not None and current.deleted and current.version == 2


async def test_failed_section_leaves_nothing(store: ResourceStore) -> None:
    with pytest.raises(RuntimeError):
        async with store.write() as tx:
            await tx.write_version(_version("r", 1, at="2026-01-01T00:00:00.000Z", method="POST"))
            raise RuntimeError("entry 2 failed")
    assert await store.current("Patient", "r") is None
    assert await store.history_count(HistoryRequest()) == 0


async def test_history_newest_first_with_cursor_since_and_at(store: ResourceStore) -> None:
    for i in range(1, 6):
        async with store.write() as tx:
            await tx.write_version(_version("h", i, at=f"2026-01-0{i}T00:00:00.000Z", method="PUT"))
    page = await store.history(HistoryRequest("Patient", "h", count=2))
    assert [v.version for v in page] == [5, 4]
    rest = await store.history(HistoryRequest("Patient", "h", count=10, before_seq=page[-1].seq))
    assert [v.version for v in rest] == [3, 2, 1]
    since = await store.history(HistoryRequest("Patient", None, since="2026-01-04T00:00:00Z"))
    assert [v.version for v in since] == [5, 4]
    at = await store.history(HistoryRequest("Patient", None, at="2026-01-02T12:00:00Z"))
    assert [v.version for v in at] == [2]
    assert await store.history_count(HistoryRequest(None, None)) == 5


async def test_write_sections_are_serialised(store: ResourceStore) -> None:
    """Two sections never interleave: a read-modify-write in each loses no update."""

    async def bump(n: int) -> None:
        async with store.write() as tx:
            current = await tx.current("Patient", "c")
            version = current.version + 1 if current else 1
            await asyncio.sleep(0)  # give the other writers every chance to interleave
            await tx.write_version(_version("c", version, at=f"2026-01-01T00:00:{n:02d}.000Z"))

    await asyncio.gather(*(bump(n) for n in range(20)))
    current = await store.current("Patient", "c")
    assert current is not None and current.version == 20


async def test_failing_section_among_concurrent_writers(store: ResourceStore) -> None:
    """A section that fails mid-burst is rolled back alone; the others in its commit group persist."""

    async def write(n: int) -> None:
        async with store.write() as tx:
            await tx.write_version(_version(f"g{n}", 1, at="2026-01-01T00:00:00.000Z", method="POST"))
            if n % 3 == 0:
                raise ValueError(f"section {n} fails")

    results = await asyncio.gather(*(write(n) for n in range(12)), return_exceptions=True)
    failed = {n for n, r in enumerate(results) if isinstance(r, ValueError)}
    assert failed == {0, 3, 6, 9}
    present = {v.id for v in await store.current_many([("Patient", f"g{n}") for n in range(12)])}
    assert present == {f"g{n}" for n in range(12) if n % 3}


async def test_cancelled_writers_never_wedge_the_store(store: ResourceStore) -> None:
    """Clients that hang up mid-write (cancelled tasks) must not leave a transaction open behind them."""

    async def write(n: int) -> None:
        async with store.write() as tx:
            await tx.write_version(_version(f"x{n}", 1, at="2026-01-01T00:00:00.000Z", method="POST"))

    for delay_steps in range(6):
        tasks = [asyncio.create_task(write(delay_steps * 100 + n)) for n in range(10)]
        for _ in range(delay_steps):
            await asyncio.sleep(0)
        for task in tasks[::3]:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.05)  # let a hand-over commit finish
        async with store.write() as tx:
            await tx.write_version(_version(f"after{delay_steps}", 1, at="2026-01-01T00:00:00.000Z"))
        assert await store.current("Patient", f"after{delay_steps}") is not None


async def test_writer_cancelled_during_commit(store: ResourceStore) -> None:
    """Cancelling a writer while its COMMIT is in flight must not let the next writer in early."""
    for steps in range(1, 6):
        task = asyncio.create_task(_write_one(store, f"c{steps}"))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        await _write_one(store, f"next{steps}")  # must not fail with "transaction within a transaction"
        await asyncio.gather(task, return_exceptions=True)
        assert await store.current("Patient", f"next{steps}") is not None


async def _write_one(store: ResourceStore, rid: str) -> None:
    async with store.write() as tx:
        await tx.write_version(_version(rid, 1, at="2026-01-01T00:00:00.000Z", method="POST"))
