"""The outbound queue: which final reports still have to reach a member's HIS, durably.

A member system can be down for hours; the hub can restart meanwhile. So a delivery is a row in the HL7
state file (the journal's SQLite file, its own table), written when the report is final, and removed
from the due set only by an answer: delivered (AA/CA), rejected (AR/CR) or failed (retries exhausted,
AE or no connection each time). `OruDelivery` is the worker; this module only stores.
Blocking calls (an enqueue waits for its fsync and for the journal's write lock): the worker runs them
in a thread, never on the event loop.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from adapters.hl7v2.statefile import open_state_file, write_transaction

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbound (
    id INTEGER PRIMARY KEY,
    report TEXT NOT NULL,          -- DiagnosticReport/<id>
    version TEXT NOT NULL,         -- the version that became final
    status TEXT NOT NULL,          -- pending | delivered | rejected | failed | dropped
    attempts INTEGER NOT NULL DEFAULT 0,
    due_at REAL NOT NULL,          -- epoch seconds of the next attempt
    target TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT,
    UNIQUE (report, version)
);
CREATE INDEX IF NOT EXISTS outbound_due ON outbound (status, due_at);
"""

FINAL_STATES = ("delivered", "rejected", "failed", "dropped")


@dataclass(frozen=True)
class Delivery:
    id: int
    report: str
    version: str
    attempts: int


@dataclass(frozen=True)
class DeliveryRow:
    """One row as `yilian hl7 outbound` lists it."""

    id: int
    report: str
    version: str
    status: str
    attempts: int
    target: str | None
    last_error: str | None


class Outbox:
    def __init__(self, path: Path) -> None:
        self._db = open_state_file(path, _SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def enqueue(self, deliveries: Sequence[tuple[str, str]]) -> int:
        """Record (report, version) pairs that must be delivered, in one durable commit; returns how
        many were new (a version already recorded is not queued twice)."""
        now, due = dt.datetime.now(dt.UTC).isoformat(), time.time()
        added = 0
        with self._lock, write_transaction(self._db) as cur:
            for report, version in deliveries:
                row = cur.execute(
                    "INSERT INTO outbound (report, version, status, due_at, created_at)"
                    " VALUES (?, ?, 'pending', ?, ?) ON CONFLICT (report, version) DO NOTHING"
                    " RETURNING id",
                    (report, version, due, now),
                ).fetchone()
                added += row is not None
        return added

    def due(self, limit: int = 50) -> list[Delivery]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, report, version, attempts FROM outbound"
                " WHERE status = 'pending' AND due_at <= ? ORDER BY due_at, id LIMIT ?",
                (time.time(), limit),
            ).fetchall()
        return [Delivery(int(r[0]), str(r[1]), str(r[2]), int(r[3])) for r in rows]

    def next_due_in(self) -> float | None:
        """Seconds until the earliest pending delivery is due (0 if overdue); None if nothing pends."""
        with self._lock:
            row = self._db.execute("SELECT min(due_at) FROM outbound WHERE status = 'pending'").fetchone()
        if row is None or row[0] is None:
            return None
        return max(0.0, float(row[0]) - time.time())

    def record(
        self,
        delivery_id: int,
        status: str,
        *,
        target: str | None = None,
        error: str | None = None,
        retry_in: float = 0.0,
    ) -> None:
        """An attempt's result: a final state, or `pending` again after `retry_in` seconds."""
        if status not in (*FINAL_STATES, "pending"):
            raise ValueError(f"unknown outbound status {status!r}")
        # Without fsync: losing this update in a power cut only means one more attempt (at least once);
        # the row itself was made durable by `enqueue`.
        with self._lock, write_transaction(self._db, durable=False) as cur:
            cur.execute(
                "UPDATE outbound SET status = ?, attempts = attempts + 1, due_at = ?, target = ?,"
                " last_error = ?, updated_at = ? WHERE id = ?",
                (
                    status,
                    time.time() + retry_in,
                    target,
                    error,
                    dt.datetime.now(dt.UTC).isoformat(),
                    delivery_id,
                ),
            )

    def rows(self, status: str | None = None, limit: int = 1_000_000) -> list[DeliveryRow]:
        sql = "SELECT id, report, version, status, attempts, target, last_error FROM outbound"
        params: list[object] = []
        if status:
            sql += " WHERE status = ?"
            params.append(status)
        with self._lock:
            rows = self._db.execute(sql + " ORDER BY id LIMIT ?", [*params, limit]).fetchall()
        return [DeliveryRow(int(r[0]), r[1], r[2], r[3], int(r[4]), r[5], r[6]) for r in rows]

    def requeue(self, delivery_id: int) -> bool:
        """Make a finished delivery (failed, rejected, dropped) due again, with a fresh set of attempts;
        False if there is no such delivery or it is still pending."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE outbound SET status = 'pending', attempts = 0, due_at = ?, updated_at = ?"
                " WHERE id = ? AND status IN ('failed', 'rejected', 'dropped')",
                (time.time(), dt.datetime.now(dt.UTC).isoformat(), delivery_id),
            )
        return cur.rowcount == 1
