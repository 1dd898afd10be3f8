"""The storage protocol: a few primitives every backend provides; FHIR semantics live above it.

Conditional create/update/delete, If-Match, version numbering and transactions are written once in
`fhir_server/interactions/` on these primitives. A backend only has to:
- keep versions (every version of every resource, deletes as tombstones) and the current pointer;
- write a version and its search index entries atomically;
- run writes inside a *serialised* section (`write()`), so a search-then-write in one section is race-free
  (this is what makes conditional create safe under concurrency);
- answer searches compiled from the backend-neutral `SearchQuery` plan.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from fhir_server.search.ast import SearchQuery
from fhir_server.search.index import IndexEntries

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """One version of one resource as stored. `body` is None for a delete tombstone."""

    resource_type: str
    id: str
    version: int
    last_updated: str  # FHIR instant, as in meta.lastUpdated
    method: str  # POST | PUT | PATCH | DELETE
    body: JsonObject | None
    seq: int = 0  # backend-global order of writes (history order, paging cursor)

    @property
    def deleted(self) -> bool:
        return self.body is None


@dataclass(frozen=True, slots=True)
class NewVersion:
    """A version ready to be written: meta already set by the interactions layer."""

    resource_type: str
    id: str
    version: int
    last_updated: str
    method: str
    body: JsonObject | None
    index: IndexEntries | None  # None for a delete

    def stored(self, seq: int) -> StoredVersion:
        """This version as stored, at `seq` in the backend's order of writes."""
        return StoredVersion(
            self.resource_type, self.id, self.version, self.last_updated, self.method, self.body, seq
        )


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    resource_type: str | None = None
    id: str | None = None
    since: str | None = None  # instant; versions with lastUpdated >= since
    at: str | None = None  # instant; the version current at that time
    count: int = 50
    before_seq: int | None = None  # keyset cursor: only versions with seq < before_seq


@dataclass(frozen=True, slots=True)
class SearchPage:
    """Matched resources of one page (already sorted), plus totals and a cursor for the next page."""

    resources: list[StoredVersion]
    total: int | None
    next_cursor: str | None
    previous_cursor: str | None = None


class WriteTransaction(Protocol):
    """Operations inside the serialised write section; committed together or not at all."""

    async def current(self, resource_type: str, resource_id: str) -> StoredVersion | None: ...

    async def write_version(self, version: NewVersion) -> StoredVersion: ...

    async def search_ids(self, query: SearchQuery, limit: int) -> list[tuple[str, str]]:
        """Ids of current resources matching `query` (seen with this transaction's own writes)."""
        ...

    async def reindex(self, resource_type: str, resource_id: str, entries: IndexEntries) -> None:
        """Replace the index entries of the current version, body untouched ($reindex)."""
        ...


class ResourceStore(Protocol):
    """A storage backend. Reads may run concurrently; writes go through `write()`."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def current(self, resource_type: str, resource_id: str) -> StoredVersion | None: ...

    async def current_many(self, refs: Sequence[tuple[str, str]]) -> list[StoredVersion]: ...

    async def version(self, resource_type: str, resource_id: str, version: int) -> StoredVersion | None: ...

    async def history(self, request: HistoryRequest) -> list[StoredVersion]: ...

    async def history_count(self, request: HistoryRequest) -> int: ...

    async def search(self, query: SearchQuery) -> SearchPage: ...

    def write(self, *, durable: bool = True) -> AbstractAsyncContextManager[WriteTransaction]:
        """A serialised write section; returns once it is committed.

        `durable=False` lets the commit return before it is on disk (it survives a process crash, not a
        power cut) for a caller that keeps its own durable record of the input and calls `sync()`
        before it forgets that record: the HL7 journal. Everyone else writes durably."""
        ...

    async def sync(self) -> None:
        """Make every commit so far durable (no-op where every commit already is)."""
        ...
