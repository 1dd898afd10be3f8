"""The writer connection's own thread: a section's buffered writes and the group's COMMIT run there, in
the order they were handed over.

Why a thread: SQLite releases the GIL while it steps a statement, so inserting a large section's rows
(an HL7 round's ~10,000 index rows, its versions) on this thread leaves the event loop free to validate
and index the next resources on the other core. Why one thread: the connection is used by one thread
at a time, and FIFO order is what keeps a resource's old index rows deleted before its new ones go in,
and every statement before the COMMIT. The event loop touches the connection only when this thread is
idle (`idle()`), so the two never use it at once.

A statement that fails here is kept in `failure`: later statements are skipped (their section is
rolled back) and the next `idle()` raises it to the section, or the COMMIT turns it into a rollback of
the group.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from fhir_server.errors import StorageError
from fhir_server.storage.sqlite.index import Statement, run_statements

T = TypeVar("T")


class WriterThread:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sqlite-write")
        self._last: concurrent.futures.Future[Any] | None = None
        self.failure: Exception | None = None
        """The first statement that failed since the last `idle()` or `settle()` (or the COMMIT)."""

    @property
    def busy(self) -> bool:
        return self._last is not None and not self._last.done()

    def ship(self, statements: list[Statement]) -> None:
        """Run `statements` on the thread after everything shipped before; returns at once."""
        if statements:
            self._last = self._executor.submit(self._run, statements)

    def _run(self, statements: list[Statement]) -> None:
        if self.failure is not None:
            return
        try:
            run_statements(self._conn, statements)
        except Exception as exc:  # noqa: BLE001 - SQLite's errors, or a value it cannot bind: the
            self.failure = exc  # section fails either way, and its writer is told at its next wait

    async def idle(self) -> None:
        """Wait until every shipped statement has run (the loop may then use the connection).

        Raises `StorageError` for a failed statement; the caller's section must be rolled back. The
        wait is shielded: a cancelled caller never cancels statements the thread has not reached."""
        if self._last is not None and not self._last.done():
            await asyncio.shield(asyncio.wrap_future(self._last))
        self._raise_failure()

    def settle(self) -> None:
        """`idle()` for the error paths, which must not yield: blocks until the thread is idle and
        forgets any failure (the caller is rolling back anyway)."""
        if self._last is not None:
            concurrent.futures.wait([self._last])
        self.failure = None

    def _raise_failure(self) -> None:
        failure, self.failure = self.failure, None
        if failure is not None:
            raise StorageError(f"writing to the database failed, nothing was written: {failure}") from failure

    def submit(self, work: Callable[[], T]) -> asyncio.Future[T]:
        """Run `work` on the thread after everything shipped (the COMMIT)."""
        future = self._executor.submit(work)
        self._last = future
        return asyncio.wrap_future(future)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
