"""The HL7 v2 journal: every received message, durably, before it is acknowledged.

Its own SQLite file (not the FHIR store: the journal must survive and replay even when the store or a
remote Sink is down), WAL with synchronous=FULL so a commit is on disk when it returns. Entries are
written in groups (`append`), one commit and one fsync for all messages that arrived together: the
group commit that lets the listener meet its throughput target without acknowledging anything that is
not on disk. (sending facility, MSH-10) is unique, which is how a re-sent message is recognised.

Status: received → applied | error (AE, replayable) | rejected (AR). Recovery re-processes `received`.
Blocking calls: the pipeline runs them in a worker thread; one Journal is used by one task at a time.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from adapters.hl7v2.statefile import open_state_file, write_transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS message (
    id INTEGER PRIMARY KEY,
    received_at TEXT NOT NULL,
    peer TEXT NOT NULL,
    sending_facility TEXT NOT NULL,
    control_id TEXT,
    message_type TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    error TEXT,
    ack BLOB,
    raw BLOB NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    updated_at TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS message_sender_control ON message (sending_facility, control_id);
CREATE INDEX IF NOT EXISTS message_status ON message (status, id);
"""

STATUSES = ("received", "applied", "error", "rejected")


@dataclass(frozen=True)
class NewEntry:
    raw: bytes
    peer: str
    sending_facility: str
    control_id: str | None
    message_type: str
    received_at: dt.datetime


@dataclass(frozen=True)
class Entry:
    id: int
    received_at: str
    peer: str
    sending_facility: str
    control_id: str | None
    message_type: str
    status: str
    error: str | None
    ack: bytes | None
    raw: bytes
    attempts: int


@dataclass(frozen=True)
class Appended:
    """Result of appending one message: its id, and for a re-send the original entry."""

    id: int
    duplicate_of: Entry | None = None


@dataclass(frozen=True)
class Outcome:
    id: int
    status: str
    error: str | None
    ack: bytes | None


_COLUMNS = (
    "id, received_at, peer, sending_facility, control_id, message_type, status, error, ack, raw, attempts"
)


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db = open_state_file(path, _SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def append(self, entries: Iterable[NewEntry]) -> list[Appended]:
        """Insert messages in one transaction (one fsync). Re-sends are not inserted: their original is
        returned instead. Returns once the commit is durable."""
        out: list[Appended] = []
        with self._lock, write_transaction(self._db) as cur:
            for e in entries:
                row = cur.execute(
                    "INSERT INTO message (received_at, peer, sending_facility, control_id, message_type,"
                    " status, raw) VALUES (?, ?, ?, ?, ?, 'received', ?)"
                    " ON CONFLICT (sending_facility, control_id) DO NOTHING RETURNING id",
                    (e.received_at.isoformat(), e.peer, e.sending_facility, e.control_id or None,
                     e.message_type, e.raw),
                ).fetchone()  # fmt: skip
                if row is not None:
                    out.append(Appended(int(row[0])))
                    continue
                original = cur.execute(
                    f"SELECT {_COLUMNS} FROM message WHERE sending_facility = ? AND control_id = ?",
                    (e.sending_facility, e.control_id),
                ).fetchone()
                entry = _entry(original)
                if entry.status in ("error", "rejected"):
                    # Never applied: a corrected re-send with the same MSH-10 is processed again.
                    cur.execute(
                        "UPDATE message SET raw = ?, peer = ?, received_at = ?, status = 'received'"
                        " WHERE id = ?",
                        (e.raw, e.peer, e.received_at.isoformat(), entry.id),
                    )
                    out.append(Appended(entry.id))
                    continue
                out.append(Appended(entry.id, entry))
        return out

    def finish(self, outcomes: Iterable[Outcome]) -> None:
        """Record outcomes (status, error, the ACK sent) in one transaction, without waiting for fsync.

        Why that is safe: the message itself is already durable (`append`), and an outcome lost in a
        crash is rebuilt by recovery: an applied message is recognised by its Provenance in the store
        and only marked, a failed one fails again the same way. Saving this fsync halves the per-round
        disk waits (~5 ms each on this machine)."""
        now = dt.datetime.now(dt.UTC).isoformat()
        with self._lock, write_transaction(self._db, durable=False) as cur:
            cur.executemany(
                "UPDATE message SET status = ?, error = ?, ack = ?, attempts = attempts + 1,"
                " updated_at = ? WHERE id = ?",
                [(o.status, o.error, o.ack, now, o.id) for o in outcomes],
            )

    def get(self, entry_id: int) -> Entry | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM message WHERE id = ?", (entry_id,)).fetchone()
        return _entry(row) if row else None

    def entries(self, status: str | None = None, limit: int = 50, after: int = 0) -> list[Entry]:
        """Entries in arrival order (id > after), optionally of one status."""
        sql = f"SELECT {_COLUMNS} FROM message WHERE id > ?"
        params: list[object] = [after]
        if status:
            sql += " AND status = ?"
            params.append(status)
        sql += " ORDER BY id LIMIT ?"
        params.append(limit)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [_entry(r) for r in rows]

    def pending(self) -> list[Entry]:
        """Entries journaled but never finished (the process stopped between journal and apply)."""
        return self.entries("received", limit=1_000_000)

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, count(*) FROM message GROUP BY status").fetchall()
        return {str(s): int(n) for s, n in rows}


def _entry(row: tuple[object, ...]) -> Entry:
    (id_, received_at, peer, facility, control, mtype, status, error, ack, raw, attempts) = row
    return Entry(
        int(id_),  # type: ignore[call-overload]
        str(received_at),
        str(peer),
        str(facility),
        None if control is None else str(control),
        str(mtype),
        str(status),
        None if error is None else str(error),
        None if ack is None else bytes(ack),  # type: ignore[call-overload]
        bytes(raw),  # type: ignore[call-overload]
        int(attempts),  # type: ignore[call-overload]
    )
