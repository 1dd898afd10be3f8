"""Copying the WAL back into the database file on a thread of its own, off the writers' path.

Why: SQLite's automatic checkpoint runs inside the COMMIT that crosses its threshold, so that one
write waits for megabytes of page copies and an fsync of the database file. Under HL7 load (about
45 MB of WAL a second at 500 messages/s) that put a 25-30 ms stall into every eighth round, which
every message of the round waited for. A PASSIVE checkpoint on a second connection runs beside the
writer (SQLite lets one checkpointer and one writer work at once, and the thread holds no GIL while
it copies). The writer keeps SQLite's automatic checkpoint only as a backstop, at a much larger WAL.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

LOGGER = logging.getLogger(__name__)

START_AT_BYTES = 4 * 1024 * 1024  # a WAL this large is copied back (1,000 pages: SQLite's default)
BACKSTOP_PAGES = 16_000  # the writer's own automatic checkpoint, if this thread falls behind


class Checkpointer:
    """One daemon thread per database; `poke()` after each commit, `close()` before the writer closes."""

    def __init__(self, path: Path, connect: Callable[[Path], sqlite3.Connection]) -> None:
        self._wal = Path(f"{path}-wal")
        self._conn = connect(path)
        self._wake = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"sqlite-checkpoint {path.name}", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        """Called from the committing thread: start a checkpoint if the WAL has grown enough."""
        try:
            size = os.stat(self._wal).st_size
        except OSError:
            return
        if size >= START_AT_BYTES:
            self._wake.set()

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stop:
                return
            try:
                self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # the backstop still checkpoints; say why this one could not
                LOGGER.warning("background WAL checkpoint failed: %s", exc)
