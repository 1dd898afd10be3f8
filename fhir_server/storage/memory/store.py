"""MemoryStore: the reference backend. Plain dicts, one asyncio lock; the contract suite's yardstick.

Transactions are made atomic by staging writes in an overlay that is merged on success and dropped on
failure, so a failing transaction leaves no trace, exactly as a database rollback would.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fhir_server.search.ast import SearchQuery
from fhir_server.search.index import IndexEntries
from fhir_server.storage.memory import search as memory_search
from fhir_server.storage.protocol import HistoryRequest, NewVersion, SearchPage, StoredVersion
from fhir_server.storage.timestamps import instant_to_us

Key = tuple[str, str]


class _State:
    def __init__(self) -> None:
        self.versions: list[StoredVersion] = []  # in seq order
        self.current: dict[Key, StoredVersion] = {}
        self.index: dict[Key, IndexEntries] = {}


class MemoryWriteTransaction:
    def __init__(self, state: _State, next_seq: int) -> None:
        self._state = state
        self.staged: list[tuple[StoredVersion, IndexEntries | None]] = []
        self.reindexed: dict[Key, IndexEntries] = {}
        self._current: dict[Key, StoredVersion] = {}
        self._next_seq = next_seq

    async def current(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        key = (resource_type, resource_id)
        return self._current.get(key) or self._state.current.get(key)

    async def write_version(self, version: NewVersion) -> StoredVersion:
        stored = version.stored(self._next_seq)
        self._next_seq += 1
        self._current[(version.resource_type, version.id)] = stored
        self.staged.append((stored, version.index))
        return stored

    def _live(self) -> list[tuple[StoredVersion, IndexEntries | None]]:
        merged = dict(self._state.current)
        merged.update(self._current)
        index = dict(self._state.index)
        for stored, entries in self.staged:
            index[(stored.resource_type, stored.id)] = entries  # type: ignore[assignment]
        return [(v, index.get(k)) for k, v in merged.items() if not v.deleted]

    async def search_ids(self, query: SearchQuery, limit: int) -> list[tuple[str, str]]:
        return memory_search.search_ids(self._live(), query, limit)

    async def reindex(self, resource_type: str, resource_id: str, entries: IndexEntries) -> None:
        self.reindexed[(resource_type, resource_id)] = entries


class MemoryStore:
    def __init__(self) -> None:
        self._state = _State()
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def current(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        return self._state.current.get((resource_type, resource_id))

    async def current_many(self, refs: Sequence[tuple[str, str]]) -> list[StoredVersion]:
        return [v for ref in refs if (v := self._state.current.get(ref)) is not None]

    async def version(self, resource_type: str, resource_id: str, version: int) -> StoredVersion | None:
        for v in self._state.versions:
            if v.resource_type == resource_type and v.id == resource_id and v.version == version:
                return v
        return None

    def _history(self, request: HistoryRequest) -> list[StoredVersion]:
        out = [
            v
            for v in self._state.versions
            if (request.resource_type is None or v.resource_type == request.resource_type)
            and (request.id is None or v.id == request.id)
            and (request.since is None or instant_to_us(v.last_updated) >= instant_to_us(request.since))
        ]
        if request.at is not None:
            at = instant_to_us(request.at)
            latest: dict[Key, StoredVersion] = {}
            for v in out:
                if instant_to_us(v.last_updated) <= at:
                    latest[(v.resource_type, v.id)] = v
            out = sorted(latest.values(), key=lambda v: v.seq)
        return out

    async def history(self, request: HistoryRequest) -> list[StoredVersion]:
        out = self._history(request)
        if request.before_seq is not None:
            out = [v for v in out if v.seq < request.before_seq]
        return list(reversed(out))[: request.count]

    async def history_count(self, request: HistoryRequest) -> int:
        return len(self._history(request))

    async def search(self, query: SearchQuery) -> SearchPage:
        live = [(v, self._state.index.get(k)) for k, v in self._state.current.items() if not v.deleted]
        return memory_search.execute_search(live, query)

    async def sync(self) -> None:
        """Nothing to make durable: this store lives and dies with the process."""

    @asynccontextmanager
    async def write(self, *, durable: bool = True) -> AsyncIterator[MemoryWriteTransaction]:
        async with self._lock:
            tx = MemoryWriteTransaction(self._state, len(self._state.versions) + 1)
            yield tx
            for stored, entries in tx.staged:
                key = (stored.resource_type, stored.id)
                self._state.versions.append(stored)
                self._state.current[key] = stored
                if entries is None:
                    self._state.index.pop(key, None)
                else:
                    self._state.index[key] = entries
            for key, entries in tx.reindexed.items():
                current = self._state.current.get(key)
                if current is not None and not current.deleted:
                    self._state.index[key] = entries
