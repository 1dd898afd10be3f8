"""SqliteStore: the embedded default backend (one database file, WAL, fsync on commit).

Point reads run on the event loop thread: a single-row SQLite statement costs microseconds, far less
than a hop to a worker thread, and one process owns the file. Writers are serialised by an asyncio lock
around `BEGIN IMMEDIATE ... COMMIT`, which is also what makes conditional create race-free: the search
and the insert run in one serialised section (`transaction.py`). A section's writes and the COMMIT run
on the writer connection's own thread (`writer.py`) when they are many, so SQLite's share of a large
write runs beside the event loop. Reads use a second connection and see committed data.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fhir_server.errors import StorageError
from fhir_server.search.ast import SearchQuery
from fhir_server.storage.protocol import HistoryRequest, SearchPage, StoredVersion
from fhir_server.storage.sqlite import search as sqlite_search
from fhir_server.storage.sqlite.checkpoint import BACKSTOP_PAGES, Checkpointer
from fhir_server.storage.sqlite.history import compile_history
from fhir_server.storage.sqlite.matches import MatchCache
from fhir_server.storage.sqlite.readers import ReaderPool
from fhir_server.storage.sqlite.schema import schema_ddl
from fhir_server.storage.sqlite.transaction import (
    SHIP_ROWS,
    THREAD_ROWS,
    VERSION_COLUMNS,
    IdAllocator,
    SqliteWriteTransaction,
    current_version,
    row_to_version,
)
from fhir_server.storage.sqlite.writer import WriterThread

LOGGER = logging.getLogger(__name__)


def _connect(path: Path | str) -> sqlite3.Connection:
    # the statement cache holds the multi-row index INSERTs (`index.bulk_inserts`) beside the rest
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, cached_statements=256)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute("PRAGMA temp_store=MEMORY")
    conn.execute("PRAGMA mmap_size=268435456")
    return conn


@dataclass
class _CommitGroup:
    """Write sections sharing one outer transaction and one COMMIT."""

    members: list[asyncio.Future[None]]
    loop: asyncio.AbstractEventLoop
    durable: bool = True
    sections: int = 0
    sections_failed: int = 0
    rids: dict[tuple[str, str], int] = field(default_factory=dict)
    """The resources its sections have written (not yet committed), by (type, id)."""

    def join(self) -> asyncio.Future[None]:
        """A future of the caller's own: cancelling one member never cancels the others' wait."""
        member: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.members.append(member)
        return member

    def finish(self, error: BaseException | None) -> None:
        for member in self.members:
            if member.done():
                continue
            if error is None:
                member.set_result(None)
            else:
                member.set_exception(error)


class SqliteStore:
    """ResourceStore over one SQLite database file."""

    def __init__(
        self,
        path: Path | str,
        *,
        max_group: int = 512,
        search_threads: int = 2,
        thread_rows: int = THREAD_ROWS,
        ship_rows: int = SHIP_ROWS,
    ) -> None:
        self._path = path
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None  # point reads, on the loop (microseconds)
        self._readers: ReaderPool | None = None  # searches and history, on worker threads
        self._search_threads = search_threads
        self._write_lock = asyncio.Lock()
        self._pending = 0  # sections entered and not yet finished (waiting for the lock included)
        self._group: _CommitGroup | None = None
        self._max_group = max_group
        self._orphans: set[asyncio.Task[None]] = set()
        self._synchronous = "FULL"  # the writer connection's current PRAGMA synchronous
        self._unsynced = False  # a commit made with synchronous=NORMAL is not yet covered by an fsync
        self._matches = MatchCache()
        self._probes = sqlite_search.ProbeCache()  # recent selectivity probes of chained filters
        self._data_version: int | None = None  # the writer's `PRAGMA data_version` when a group began
        self._checkpointer: Checkpointer | None = None
        self._thread: WriterThread | None = None  # the writer connection's statements and COMMITs
        self._ids = IdAllocator()
        self._max_params = 999
        self._thread_rows = thread_rows
        self._ship_rows = ship_rows

    async def open(self) -> None:
        if isinstance(self._path, Path) and str(self._path) != ":memory:":
            self._path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = _connect(self._path)
            self._max_params = self._writer.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            for ddl in schema_ddl():
                self._writer.execute(ddl)
            if str(self._path) != ":memory:":  # a database file: WAL copied back on a thread of its own
                self._checkpointer = Checkpointer(Path(self._path), _connect)
                self._writer.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            self._thread = WriterThread(self._writer)
            self._reader = _connect(self._path)
            self._readers = ReaderPool(self._path, self._search_threads, _connect)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open SQLite database {self._path}: {exc}") from exc

    async def close(self) -> None:
        for task in list(self._orphans):
            await task
        if self._readers is not None:
            self._readers.close()
            self._readers = None
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        if self._thread is not None:
            self._thread.close()
            self._thread = None
        for conn in (self._reader, self._writer):
            if conn is not None:
                conn.close()
        self._reader = self._writer = None

    @property
    def _read(self) -> sqlite3.Connection:
        if self._reader is None:
            raise StorageError("SQLite store is not open")
        return self._reader

    async def current(self, resource_type: str, resource_id: str) -> StoredVersion | None:
        return current_version(self._read, resource_type, resource_id)

    async def current_many(self, refs: Sequence[tuple[str, str]]) -> list[StoredVersion]:
        out: list[StoredVersion] = []
        for resource_type, resource_id in refs:
            found = current_version(self._read, resource_type, resource_id)
            if found is not None:
                out.append(found)
        return out

    async def version(self, resource_type: str, resource_id: str, version: int) -> StoredVersion | None:
        row = self._read.execute(
            f"SELECT {VERSION_COLUMNS} FROM version v WHERE v.type = ? AND v.id = ? AND v.version = ?",
            (resource_type, resource_id, version),
        ).fetchone()
        return row_to_version(row) if row else None

    async def history(self, request: HistoryRequest) -> list[StoredVersion]:
        sql, params = compile_history(request, columns=VERSION_COLUMNS, count_only=False)
        rows = await self._pool.run(lambda conn: conn.execute(sql, params).fetchall())
        return [row_to_version(r) for r in rows]

    async def history_count(self, request: HistoryRequest) -> int:
        sql, params = compile_history(request, columns=VERSION_COLUMNS, count_only=True)
        return int(await self._pool.run(lambda conn: conn.execute(sql, params).fetchone()[0]))

    async def search(self, query: SearchQuery) -> SearchPage:
        return await self._pool.run(lambda conn: sqlite_search.execute_search(conn, query, self._probes))

    @property
    def _pool(self) -> ReaderPool:
        if self._readers is None:
            raise StorageError("SQLite store is not open")
        return self._readers

    async def sync(self) -> None:
        """Make every commit so far durable: one small durable commit.

        Why that suffices: the WAL is one file written in commit order, and a synchronous=FULL commit
        fsyncs that file after appending its frames, so the earlier (NORMAL) commits' frames are on disk
        with it. A checkpoint in between has already fsynced them into the database file."""
        if not self._unsynced:
            return
        async with self.write(durable=True):
            assert self._writer is not None
            self._writer.execute(
                "INSERT OR REPLACE INTO sync_point (id, synced_us) VALUES (1, ?)", (time.time_ns() // 1000,)
            )

    @asynccontextmanager
    async def write(self, *, durable: bool = True) -> AsyncIterator[SqliteWriteTransaction]:
        """One serialised write section, committed by group commit.

        Sections run one at a time under the lock, each inside a SAVEPOINT of a shared outer
        transaction. The last section of a burst (nobody else waiting) commits the group; the COMMIT
        (the fsync) runs in a worker thread while the lock is held, so the event loop keeps serving
        and requests arriving meanwhile form the next group. Every caller returns only after the
        COMMIT that made its section durable: one fsync is shared by many writes, none is answered early.

        A group is durable (synchronous=FULL) or not (NORMAL: no fsync), fixed at BEGIN because SQLite
        refuses to change the level inside a transaction. A non-durable section joins any group; a durable
        one never joins a non-durable group: that group is committed first and a durable one begun.
        """
        conn, thread = self._writer, self._thread
        if conn is None or thread is None:
            raise StorageError("SQLite store is not open")
        self._pending += 1
        try:
            async with self._write_lock:
                if durable and self._group is not None and not self._group.durable:
                    await self._commit(conn, self._group)
                group = self._open_group(conn, durable)
                if thread.busy or thread.failure is not None:
                    await self._settle_previous(conn, group)
                done = group.join()
                # The first section of a group needs no savepoint: if it fails, the whole transaction
                # is rolled back, and nothing else is in it. A savepoint copies every page a section
                # first changes into the statement journal: for a one-message HL7 round, about as
                # much work as inserting its index rows.
                alone = group.sections + group.sections_failed == 0
                if not alone:
                    conn.execute("SAVEPOINT section")
                try:
                    section = SqliteWriteTransaction(
                        conn, self._read, group.rids, self._matches, thread, self._ids,
                        max_params=self._max_params, thread_rows=self._thread_rows,
                        ship_rows=self._ship_rows,
                    )  # fmt: skip
                    yield section
                    section.end()
                except BaseException:
                    self._matches.clear()
                    thread.settle()  # what this section shipped has run (or was skipped after a failure)
                    if alone:
                        self._abandon(conn, group)
                        raise
                    conn.execute("ROLLBACK TO section")
                    conn.execute("RELEASE section")
                    group.sections_failed += 1
                    await self._maybe_commit(conn, group)
                    raise
                if not alone and thread.busy:  # after the section's own statements, on the thread
                    thread.ship([("RELEASE section", [])])
                elif not alone:
                    conn.execute("RELEASE section")
                group.sections += 1
                group.rids.update(section.rids)
                await self._maybe_commit(conn, group)
        finally:
            self._pending -= 1
            if self._pending == 0 and self._group is not None and not self._write_lock.locked():
                # The writer this group was waiting for was cancelled before its turn: commit for it.
                task = asyncio.get_running_loop().create_task(self._commit_orphan(conn))
                self._orphans.add(task)
                task.add_done_callback(self._orphans.discard)
        await done

    def _abandon(
        self, conn: sqlite3.Connection, group: _CommitGroup, error: BaseException | None = None
    ) -> None:
        """Roll back a group whose only section failed (or whose earlier sections' writes could not be
        made: `error` for their writers); the next section begins a new one."""
        self._group = None
        if self._thread is not None:
            self._thread.settle()
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            LOGGER.exception("rollback of a failed write section failed")
        group.finish(error)

    async def _settle_previous(self, conn: sqlite3.Connection, group: _CommitGroup) -> None:
        """Wait for the previous section's writes before this section reads or rewrites any.

        A failure there belongs to sections that have already ended: the whole group is rolled back
        and every writer in it, this one included, gets the error."""
        assert self._thread is not None
        try:
            await self._thread.idle()
        except StorageError as error:
            self._matches.clear()
            self._abandon(conn, group, error)
            raise

    def _open_group(self, conn: sqlite3.Connection, durable: bool) -> _CommitGroup:
        if self._group is None:
            level = "FULL" if durable else "NORMAL"
            try:
                if level != self._synchronous:
                    conn.execute(f"PRAGMA synchronous={level}")
                    self._synchronous = level
                conn.execute("BEGIN IMMEDIATE")
                data_version = conn.execute("PRAGMA data_version").fetchone()[0]
                if data_version != self._data_version:  # another connection committed (or the first)
                    self._ids.begin(conn)
            except sqlite3.Error as exc:
                raise StorageError(f"cannot start a write transaction: {exc}") from exc
            if data_version != self._data_version:  # answers may be stale
                self._matches.clear()
                self._data_version = data_version
            self._group = _CommitGroup([], asyncio.get_running_loop(), durable)
        return self._group

    async def _maybe_commit(self, conn: sqlite3.Connection, group: _CommitGroup) -> None:
        """Commit when this is the last waiting section, or the group is big enough."""
        if self._pending == 1:
            # Let writers that are already runnable reach the lock and join this group.
            await asyncio.sleep(0)
        if self._pending > 1 and group.sections + group.sections_failed < self._max_group:
            return
        await self._commit(conn, group)

    async def _commit(self, conn: sqlite3.Connection, group: _CommitGroup) -> None:
        """COMMIT in a worker thread; the caller holds the lock until it is over, even if cancelled.

        Releasing the lock while the thread still commits would let the next writer BEGIN on a
        connection that is mid-COMMIT, so a cancellation waits for the COMMIT and is re-raised after.
        """
        self._group = None
        assert self._thread is not None
        commit = self._thread.submit(lambda: self._commit_sync(conn, group))
        cancelled = False
        while True:
            try:
                await asyncio.shield(commit)
                break
            except asyncio.CancelledError:  # kept even when the COMMIT is done by now: a caller
                cancelled = True  # cancelled as it ended must still see it (`stop()` waits on that)
                if commit.done():
                    break
        if cancelled:
            raise asyncio.CancelledError

    def _commit_sync(self, conn: sqlite3.Connection, group: _CommitGroup) -> None:
        """On the writer thread, after every statement shipped before it: COMMIT, or ROLLBACK if one
        of them failed (after its section ended, so the whole group goes). Every writer of the group
        is answered whatever happens here: one left waiting would wait for good."""
        assert self._thread is not None
        failure, self._thread.failure = self._thread.failure, None
        error: StorageError | None = None
        try:
            if failure is not None:
                error = StorageError(f"writing to the database failed, nothing was written: {failure}")
            else:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error as exc:
                    error = StorageError(f"commit failed, nothing was written: {exc}")
            if error is not None:
                self._matches.clear()  # under the write lock: no section runs meanwhile
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    LOGGER.exception("rollback after a failed write or commit also failed")
            else:
                self._unsynced = not group.durable  # commits are serialised: no other thread writes it
                if self._checkpointer is not None:
                    self._checkpointer.poke()
        except BaseException as exc:  # a bug here: the group is answered with it rather than left waiting
            error = StorageError(f"commit failed: {exc!r}")
            raise
        finally:
            group.loop.call_soon_threadsafe(group.finish, error)

    async def _commit_orphan(self, conn: sqlite3.Connection) -> None:
        async with self._write_lock:
            if self._group is not None:
                await self._commit(conn, self._group)
