"""Worker threads with a read connection each, for the SQLite store's searches and history."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class ReaderPool:
    """Worker threads with a read connection each, for searches and history.

    Why: a point read costs microseconds and stays on the event loop, but a search that sorts or
    counts many matches can take hundreds of milliseconds; on the loop it would stall every other
    request, MLLP ACKs and DICOM responses included. SQLite releases the GIL while it works.
    """

    def __init__(
        self, path: Path | str, size: int, connect: Callable[[Path | str], sqlite3.Connection]
    ) -> None:
        self._path = path
        self._connect = connect
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="sqlite-read")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect(self._path)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    async def run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(self._connection()))

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
