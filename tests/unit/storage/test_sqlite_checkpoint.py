"""The WAL is copied back into the database file by the store's checkpoint thread, not inside a
writer's COMMIT, and closing the store stops that thread."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from fhir_server.search.index import IndexEntries
from fhir_server.storage.protocol import NewVersion
from fhir_server.storage.sqlite.checkpoint import BACKSTOP_PAGES, START_AT_BYTES
from fhir_server.storage.sqlite.store import SqliteStore


def _patient(n: int) -> NewVersion:
    body = {"resourceType": "Patient", "id": f"p{n}", "text": {"status": "generated", "div": "x" * 4000}}
    at = "2026-01-01T00:00:00.000Z"
    return NewVersion("Patient", f"p{n}", 1, at, "POST", body, IndexEntries("Patient"))


async def test_the_wal_is_checkpointed_in_the_background(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    store = SqliteStore(db)
    await store.open()
    try:
        assert store._writer is not None
        assert store._writer.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP_PAGES
        for batch in range(4):  # ~6 MB of WAL: past the thread's start, far below the writer's backstop
            async with store.write(durable=False) as tx:
                for n in range(batch * 400, (batch + 1) * 400):
                    await tx.write_version(_patient(n))
        for _ in range(250):
            if db.stat().st_size > START_AT_BYTES:
                break
            await asyncio.sleep(0.02)
        assert db.stat().st_size > START_AT_BYTES  # pages reached the database file without a COMMIT stall
        assert (await store.current("Patient", "p1599")) is not None
    finally:
        await store.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("sqlite-checkpoint")]
