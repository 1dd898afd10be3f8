"""Every storage backend runs the same contract suite: memory (reference), SQLite, MongoDB.

"sqlite-writer-thread" is SQLite with every write handed to the writer thread as soon as it is made,
the path large HL7 rounds take (there, every 2,048 index rows); "sqlite" writes small sections' rows
on the event loop when they end, as REST writes do."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhir_server.hub import open_hub
from fhir_server.settings import Settings
from fhir_server.storage.memory.store import MemoryStore
from fhir_server.storage.protocol import ResourceStore
from fhir_server.storage.sqlite.store import SqliteStore

BACKENDS = ["memory", "sqlite", "sqlite-writer-thread", "mongodb"]


async def _make(kind: str, tmp_path: Path) -> ResourceStore | None:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        return SqliteStore(tmp_path / "contract.db")
    if kind == "sqlite-writer-thread":
        return SqliteStore(tmp_path / "contract.db", thread_rows=0, ship_rows=1)
    try:
        from fhir_server.storage.mongo.store import MongoStore
    except ImportError:
        return None
    uri = os.environ.get("YILIAN_TEST_MONGODB_URI")
    if uri:
        return MongoStore.from_uri(uri, f"yilian_test_{os.getpid()}_{tmp_path.name}"[:60])
    return MongoStore.mongomock()


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ResourceStore]:
    made = await _make(request.param, tmp_path)
    if made is None:
        pytest.skip(f"{request.param} backend not available")
    await made.open()
    try:
        yield made
    finally:
        await made.close()


@asynccontextmanager
async def hub_client(backend: str, tmp_path: Path, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client of a whole hub on `backend` (its listeners on ephemeral ports, audit held back)."""
    store = await _make(backend, tmp_path)
    if store is None:
        pytest.skip(f"{backend} backend not available")
    config = Settings(
        db=tmp_path / "hub.db",
        dicom_storage=tmp_path / "dicom",
        hl7_journal=tmp_path / "journal.db",
        mllp_port=0,
        dicom_port=0,
        audit_flush_seconds=3600.0,
        **settings,
    )
    async with open_hub(config, store) as hub:
        transport = httpx.ASGITransport(app=hub.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://hub.test") as c:
            yield c
