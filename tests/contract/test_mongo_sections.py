"""The MongoDB transaction path: a real replica set is a boundary we cannot run here, so its session is
faked (mongomock has none) while the data still goes through mongomock. Checks the protocol the store
speaks to the server: the writer lease is taken first inside the transaction, a conflicting lease is
retried after aborting, a failing section aborts and never commits.
Against a real server (YILIAN_TEST_MONGODB_URI on a replica set) the shared contract suite runs the real
transactions instead."""

from __future__ import annotations

from typing import Any

import pytest
from mongomock_motor import AsyncMongoMockCollection
from pymongo.errors import OperationFailure

from fhir_server.errors import StorageError
from fhir_server.search.index import IndexEntries
from fhir_server.storage.mongo.store import MongoStore
from fhir_server.storage.protocol import NewVersion


class FakeSession:
    """Records the transaction calls. Falsy, because mongomock refuses any truthy `session=`."""

    def __init__(self, log: list[str]) -> None:
        self.log = log

    def __bool__(self) -> bool:
        return False

    async def start_transaction(self, **_: Any) -> None:
        self.log.append("start")

    async def commit_transaction(self) -> None:
        self.log.append("commit")

    async def abort_transaction(self) -> None:
        self.log.append("abort")

    async def end_session(self) -> None:
        self.log.append("end")


@pytest.fixture
async def tx_store(monkeypatch: pytest.MonkeyPatch) -> Any:
    log: list[str] = []
    store = MongoStore(lambda: _client_with_sessions(log), "t", transactions=True, lock_timeout=1.0)
    await store.open()
    log.clear()
    conflicts = {"left": 0}
    original = AsyncMongoMockCollection.update_one

    async def update_one(self: Any, filter_doc: Any, update: Any, *args: Any, **kwargs: Any) -> Any:
        session = kwargs.get("session")
        if isinstance(session, FakeSession) and filter_doc == {"_id": "writer"}:
            if conflicts["left"]:
                conflicts["left"] -= 1
                log.append("conflict")
                raise OperationFailure("WriteConflict", 112, {"errorLabels": ["TransientTransactionError"]})
            log.append("lease")
        return await original(self, filter_doc, update, *args, **kwargs)

    monkeypatch.setattr(AsyncMongoMockCollection, "update_one", update_one)
    yield store, log, conflicts
    await store.close()


def _client_with_sessions(log: list[str]) -> Any:
    from mongomock_motor import AsyncMongoMockClient

    client = AsyncMongoMockClient()
    client.start_session = lambda: FakeSession(log)
    return client


def _new(rid: str) -> NewVersion:
    body = {"resourceType": "Patient", "id": rid}
    return NewVersion("Patient", rid, 1, "2026-01-01T00:00:00Z", "POST", body, IndexEntries("Patient"))


async def test_section_takes_the_lease_then_commits(tx_store: Any) -> None:
    store, log, _ = tx_store
    async with store.write() as tx:
        await tx.write_version(_new("a"))
    assert log == ["start", "lease", "commit", "end"]
    assert (await store.current("Patient", "a")) is not None


async def test_conflicting_lease_is_retried_after_abort(tx_store: Any) -> None:
    store, log, conflicts = tx_store
    conflicts["left"] = 2
    async with store.write() as tx:
        await tx.write_version(_new("b"))
    assert log == [
        "start",
        "conflict",
        "abort",
        "start",
        "conflict",
        "abort",
        "start",
        "lease",
        "commit",
        "end",
    ]


async def test_failing_section_aborts_and_never_commits(tx_store: Any) -> None:
    store, log, _ = tx_store
    with pytest.raises(RuntimeError):
        async with store.write() as tx:
            await tx.write_version(_new("c"))
            raise RuntimeError("entry failed")
    assert log == ["start", "lease", "abort", "end"]


async def test_lease_never_obtained_is_a_storage_error(tx_store: Any) -> None:
    store, log, conflicts = tx_store
    conflicts["left"] = 10_000
    with pytest.raises(StorageError):
        async with store.write():
            pass
    assert "commit" not in log and log[-1] == "end"
