"""The HL7 state file (journal and outbound queue share it): its connections and write transactions.

Two stores write to one SQLite file, each through its own connection: `journal.Journal` (messages) and
`outbox.Outbox` (deliveries). They follow one rule, kept here so it cannot drift: a write either waits
for its fsync (what must survive a power cut: a received message, a queued delivery) or explicitly does
not (an outcome that recovery or a repeated attempt can rebuild).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT_MS = 10_000  # the other store's commit (an fsync) may hold the write lock for a moment


def open_state_file(path: Path, schema: str) -> sqlite3.Connection:
    """A connection to the state file (created with its directory if absent), WAL, fsync by default."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    db.executescript(schema)
    return db


@contextmanager
def write_transaction(db: sqlite3.Connection, *, durable: bool = True) -> Iterator[sqlite3.Cursor]:
    """One IMMEDIATE transaction, committed (or rolled back on any error) on exit.

    `durable=False` commits without fsync; SQLite only lets the safety level change between
    transactions, so it is set before BEGIN and restored after the end, whatever happened."""
    cur = db.cursor()
    if not durable:
        cur.execute("PRAGMA synchronous=NORMAL")
    try:
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
    finally:
        if not durable:
            cur.execute("PRAGMA synchronous=FULL")
