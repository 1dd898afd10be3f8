"""One write section of the SQLite store: what it writes is buffered and handed to the writer thread,
what it reads comes from the writer connection or, where that gives the same answer, from committed data.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

import orjson

from fhir_server.errors import StorageError
from fhir_server.search.ast import SearchQuery
from fhir_server.search.index import IndexEntries
from fhir_server.storage.protocol import NewVersion, StoredVersion
from fhir_server.storage.sqlite import search as sqlite_search
from fhir_server.storage.sqlite.index import rewrite_index, run_statements
from fhir_server.storage.sqlite.matches import MatchCache
from fhir_server.storage.sqlite.section import SectionWrites
from fhir_server.storage.sqlite.writer import WriterThread
from fhir_server.storage.timestamps import instant_to_us

THREAD_ROWS = 256
"""A section whose writes come to this many index rows has them run by the writer thread (an HL7 round
of about 4 messages or more); a smaller one (a REST write) runs them on the loop when it ends."""
SHIP_ROWS = 2048
"""A section hands its buffered writes to the writer thread each time this many index rows have
gathered, so the thread inserts them while the section goes on."""
VERSION_COLUMNS = "v.type, v.id, v.version, v.last_updated, v.method, v.body, v.seq"


def row_to_version(row: Sequence[Any]) -> StoredVersion:
    body = orjson.loads(row[5]) if row[5] is not None else None
    return StoredVersion(row[0], row[1], row[2], row[3], row[4], body, row[6])


class IdAllocator:
    """Row ids for the resource and version tables, handed out by the store rather than by SQLite.

    Why: a section's INSERTs run later, on the writer thread, but its index rows need their resource's
    rid and its callers the version's seq now. Only the store's writer connection writes while the
    process runs (`BEGIN IMMEDIATE` keeps others out until COMMIT), so the maxima are read again only
    when another connection has committed since (`PRAGMA data_version`); a rolled-back section or
    group only leaves a gap."""

    def __init__(self) -> None:
        self._rid = 0
        self._seq = 0

    def begin(self, conn: sqlite3.Connection) -> None:
        self._rid = conn.execute("SELECT COALESCE(MAX(rid), 0) FROM resource").fetchone()[0]
        # version.seq is AUTOINCREMENT: never reuse one, even of a version no longer stored
        self._seq = conn.execute(
            "SELECT MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'version'), 0),"
            " COALESCE((SELECT MAX(seq) FROM version), 0))"
        ).fetchone()[0]

    def rid(self) -> int:
        self._rid += 1
        return self._rid

    def seq(self) -> int:
        self._seq += 1
        return self._seq


class SqliteWriteTransaction:
    """The serialised write section of one SqliteStore (one `BEGIN IMMEDIATE` transaction).

    Writes are buffered (`SectionWrites`); each time `ship_rows` index rows have gathered they go to
    the writer thread while the section goes on. A search, or a read of a resource the commit group has
    written, uses the writer connection on the loop once the buffer is handed over and the thread is
    idle (`_quiet`). A read of any other resource does not wait for the thread: while it works, the
    read uses the committed state (`committed`, a read connection), which gives the same answer, since
    only this group writes until it commits (`BEGIN IMMEDIATE`)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        committed: sqlite3.Connection,
        group_rids: dict[tuple[str, str], int],
        matches: MatchCache,
        writer: WriterThread,
        ids: IdAllocator,
        *,
        max_params: int,
        thread_rows: int = THREAD_ROWS,
        ship_rows: int = SHIP_ROWS,
    ) -> None:
        self._conn = conn
        self._committed = committed
        self._group_rids = group_rids
        self._writes = SectionWrites(max_params)
        self._thread_rows = thread_rows
        self._ship_rows = ship_rows
        self._matches = matches
        self._writer = writer
        self._ids = ids
        self.rids: dict[tuple[str, str], int] = {}
        """The resources this section has written; the group's once the section succeeds."""
        self._shipped = False

    async def _quiet(self) -> None:
        """Everything written so far is in the database and the writer thread is idle."""
        if self._writes:
            self._ship()
        await self._writer.idle()

    def _ship(self) -> None:
        self._writer.ship(self._writes.take())
        self._shipped = True

    def end(self) -> None:
        """End the section: what is still buffered is written now on the loop if the section is small
        and nothing of it went to the thread (a REST write), else left to the writer thread, which runs
        it before the group's COMMIT.

        Why the split: a hand-over to the thread costs a GIL switch, more than a one-resource section's
        few statements cost on the loop."""
        if self._shipped or self._writes.index_rows() >= self._thread_rows:
            self._ship()
        elif self._writes:
            try:
                run_statements(self._conn, self._writes.take())
            except (sqlite3.Error, OverflowError, ValueError) as exc:  # SQLite's, or a value it cannot bind
                raise StorageError(f"writing to the database failed, nothing was written: {exc}") from exc

    async def current(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        key = (resource_type, resource_id)
        if key in self.rids or key in self._group_rids:
            await self._quiet()
        return current_version(self._reader(), resource_type, resource_id)

    def _reader(self) -> sqlite3.Connection:
        """The connection for a read that needs nothing still buffered: the writer's while its thread
        is idle (its page cache stays warm, while the read connection's is reset by every commit:
        ~40 us a read), else the committed state, which gives the same answer for what this group
        has not written."""
        return self._committed if self._writer.busy else self._conn

    def _rid(self, key: tuple[str, str]) -> int | None:
        """The rid of a resource written before (not by this group: then it is committed)."""
        rid = self.rids.get(key) or self._group_rids.get(key)
        if rid is None:
            sql = "SELECT rid FROM resource WHERE type = ? AND id = ?"
            row = self._reader().execute(sql, key).fetchone()
            rid = row[0] if row is not None else None
        return rid

    async def write_version(self, version: NewVersion) -> StoredVersion:
        self._matches.wrote(version.resource_type)
        key = (version.resource_type, version.id)
        # Version 1 is written only where nothing is stored under the id (not even a deleted
        # resource, which keeps its versions), so it gets a new rid without looking first; a mistake
        # fails on the table's unique (type, id) key rather than going unnoticed.
        rid = None if version.version == 1 else self._rid(key)
        new = rid is None
        if rid is None:
            rid = self._ids.rid()
        self.rids[key] = rid
        seq = self._ids.seq()
        lu_us = instant_to_us(version.last_updated)
        deleted = int(version.body is None)
        body = orjson.dumps(version.body) if version.body is not None else None
        self._writes.write(
            (rid, version.resource_type, version.id, version.version, seq, lu_us, deleted),
            (seq, rid, version.resource_type, version.id, version.version, version.last_updated, lu_us,
             version.method, body),
            version.index,
            new=new,
        )  # fmt: skip
        if self._writes.index_rows() >= self._ship_rows:
            self._ship()
        return version.stored(seq)

    async def search_ids(self, query: SearchQuery, limit: int) -> list[tuple[str, str]]:
        cacheable = self._matches.cacheable(query)
        if cacheable and (known := self._matches.get(query, limit)) is not None:
            return known
        await self._quiet()
        ids = sqlite_search.search_ids(self._conn, query, limit)
        if cacheable:
            self._matches.put(query, limit, ids)
        return ids

    async def reindex(self, resource_type: str, resource_id: str, entries: IndexEntries) -> None:
        self._matches.wrote(resource_type)
        await self._quiet()
        rewrite_index(self._conn, resource_type, resource_id, entries)


def current_version(conn: sqlite3.Connection, resource_type: str, resource_id: str) -> StoredVersion | None:
    row = conn.execute(
        f"SELECT {VERSION_COLUMNS} FROM resource r JOIN version v ON v.seq = r.seq"
        " WHERE r.type = ? AND r.id = ?",
        (resource_type, resource_id),
    ).fetchone()
    return row_to_version(row) if row else None
