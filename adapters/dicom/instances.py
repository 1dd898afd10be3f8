"""The adapter's instance store: content-addressed DICOM files plus a small SQLite index.

A file is written to `tmp/`, fsync'd, then `os.replace`d into `objects/<sha[:2]>/<sha>.dcm`
and its directory fsync'd, and only then indexed, so a crash or a full disk leaves either the whole
instance or nothing (a stray tmp file at worst, removed on open). Bytes are stored exactly as received,
which is what lets C-MOVE/C-GET/WADO-RS return them unchanged. The index (SOP Instance UID → file and
summary) is the adapter's own lookup for C-FIND/QIDO at series and instance level; FHIR storage is never
touched from here. Several processes may open the same store (SQLite WAL + content addressing).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import queue
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson

from adapters.base import AdapterError
from adapters.dicom.summary import InstanceSummary, InvalidInstance, summarize
from fhir_server.settings import Settings

log = logging.getLogger(__name__)

DUPLICATE_POLICIES = ("keep", "replace")
CLEAN_MARK = "clean-shutdown"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS instance (
    sop_uid TEXT PRIMARY KEY,
    study_uid TEXT NOT NULL,
    series_uid TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    received_at TEXT NOT NULL,
    calling_ae TEXT NOT NULL,
    member TEXT NOT NULL,
    summary TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instance_study ON instance (study_uid, series_uid);
CREATE TABLE IF NOT EXISTS pending_study (study_uid TEXT PRIMARY KEY, generation INTEGER NOT NULL);
"""


class InstanceWriteError(AdapterError):
    """The instance could not be made durable (disk full, permissions); nothing was stored."""


class PendingWrite:
    """An instance's bytes on their way to disk (see `InstanceStore.begin`)."""

    def __init__(self, future: Future[tuple[str, bool]], size: int) -> None:
        self._future = future
        self.size = size

    def result(self) -> tuple[str, bool]:
        return self._future.result()


class StreamWrite:
    """An instance written to its tmp file fragment by fragment as the network delivers it.

    Hashing and writing then overlap with receiving, so once the last fragment is in, only the flush
    (on the I/O pool, beside the dataset check) stands between the peer and its status. `finish` gives
    the same `PendingWrite` as `InstanceStore.begin`; a failed write is reported there, not mid-stream,
    because the peer's remaining fragments must be read anyway.
    """

    def __init__(self, store: InstanceStore, tmp: Path, fd: int, hashed: bool = True) -> None:
        self._store, self.tmp, self.fd = store, tmp, fd
        self._sha = hashlib.sha256() if hashed else None
        self._error: InstanceWriteError | None = None
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        if self._error is not None:
            return
        try:
            view = memoryview(data)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
        except OSError as exc:
            self._error = InstanceWriteError(f"cannot write instance file: {exc.strerror or exc}")
            return
        if self._sha is not None:
            self._sha.update(data)
        self.size += len(data)

    def raise_if_failed(self) -> None:
        if self._error is not None:
            self.discard()
            raise self._error

    def finish(self) -> PendingWrite:
        self.raise_if_failed()
        assert self._sha is not None, "finish() is for hashed streams"
        return self._store.flush_stream(self.tmp, self.fd, self._sha.hexdigest(), self.size)

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class StoredInstance:
    """One indexed instance: its summary, where its bytes are and who sent it."""

    summary: InstanceSummary
    sha256: str
    size: int
    received_at: str
    calling_ae: str
    member: str
    outcome: str = "stored"  # stored | duplicate-kept | replaced


class InstanceStore:
    """Atomic, content-addressed files and their index; safe to call from pynetdicom threads."""

    def __init__(self, root: Path, duplicate_policy: str = "keep", fsync: bool = True) -> None:
        if duplicate_policy not in DUPLICATE_POLICIES:
            raise ValueError(f"dicom_duplicate_policy must be one of {DUPLICATE_POLICIES}")
        self.root = root
        self.duplicate_policy = duplicate_policy
        self.fsync = fsync  # False only to measure what durability costs (like Orthanc's SyncStorageArea)
        self._objects = root / "objects"
        self._tmp = root / "tmp"
        for prefix in range(256):  # 256 fan-out directories made once, not per instance
            (self._objects / f"{prefix:02x}").mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._io = ThreadPoolExecutor(max_workers=8, thread_name_prefix="dicom-io")
        # Creating a file costs ~0.3 ms here (ext4 inode allocation, seen with perf), on the critical
        # path of a modality that waits for each status. So the next instance's tmp file is created
        # ahead, on the I/O pool, while this one arrives; `close` removes the unused spares.
        self._spare_tmp: queue.SimpleQueue[tuple[Path, int]] = queue.SimpleQueue()
        self._db = sqlite3.connect(root / "index.db", check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: commits are crash-consistent but not fsync'd; the instance *file* is, and
        # `reindex_orphans` re-indexes any file whose index row a power cut took away.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._io.shutdown(wait=True)
        while not self._spare_tmp.empty():
            tmp, fd = self._spare_tmp.get_nowait()
            os.close(fd)
            tmp.unlink(missing_ok=True)
        with self._lock:
            self._db.close()

    def reindex_orphans(self) -> int:
        """Index object files the index does not know (index commits lost in a power cut); count them.

        Files are durable before success is returned, index rows only crash-consistent, so after an
        unclean stop the difference is exactly the instances to re-index. Run at start, off the loop.
        """
        with self._lock:
            known = {row[0] for row in self._db.execute("SELECT DISTINCT sha256 FROM instance")}
        restored = 0
        for path in self._objects.glob("*/*.dcm"):
            if path.stem in known:
                continue
            data = path.read_bytes()
            try:
                summary = summarize(data)
            except InvalidInstance:
                log.warning("unreadable object file left in the instance store: %s", path.name)
                continue
            when = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            self.put(data, summary, "", "", when)
            restored += 1
        if restored:
            log.warning("re-indexed %d instance files after an unclean stop", restored)
        return restored

    def take_clean_mark(self) -> bool:
        """True if the owning service stopped cleanly last time (then no re-index is needed); the mark
        is removed, so a crash from now on is detected at the next start."""
        mark = self.root / CLEAN_MARK
        clean = mark.exists()
        mark.unlink(missing_ok=True)
        _fsync_dir(self.root)
        return clean

    def leave_clean_mark(self) -> None:
        """Called by the owning service after every writer (worker processes too) has stopped."""
        (self.root / CLEAN_MARK).touch()
        _fsync_dir(self.root)

    def clean_tmp(self) -> None:
        """Remove half-written files left by a crash (only call when no writer is active)."""
        for stray in self._tmp.glob("*.part"):
            stray.unlink(missing_ok=True)

    def path_for(self, sha256: str) -> Path:
        return self._objects / sha256[:2] / f"{sha256}.dcm"

    def begin(self, part10: bytes) -> PendingWrite:
        """Start making the bytes durable (hash, tmp file, fdatasync) on the I/O pool.

        The caller checks the dataset meanwhile, then calls `commit` or `abandon`: the disk flush, the
        hash and the (GIL-bound) parse overlap instead of adding up, per instance, on one association.
        """
        return PendingWrite(self._io.submit(self._stage, part10), len(part10))

    def abandon(self, pending: PendingWrite) -> None:
        """The dataset failed its checks: remove the file `begin` placed, unless something references it."""
        with contextlib.suppress(InstanceWriteError):
            sha, created = pending.result()
            if created:
                with self._lock:
                    self._drop_if_unreferenced(sha)

    def put(
        self,
        part10: bytes,
        summary: InstanceSummary,
        calling_ae: str,
        member: str,
        received_at: datetime | None = None,
    ) -> StoredInstance:
        """Make the instance durable and indexed, honouring the duplicate policy; raise on failure."""
        return self.commit(self.begin(part10), summary, calling_ae, member, received_at)

    def commit(
        self,
        pending: PendingWrite,
        summary: InstanceSummary,
        calling_ae: str,
        member: str,
        received_at: datetime | None = None,
    ) -> StoredInstance:
        """Finish a `begin`: move the flushed file into place, then index it (after which it exists)."""
        when = (received_at or datetime.now(UTC)).isoformat(timespec="milliseconds")
        sop_uid = summary.sop_instance_uid
        sha, created = pending.result()  # duplicates under "keep" are caught inside the transaction below
        record = StoredInstance(summary, sha, pending.size, when, calling_ae, member)
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")  # serialises writers across worker processes
                row = self._db.execute("SELECT sha256 FROM instance WHERE sop_uid = ?", (sop_uid,)).fetchone()
                if row is not None and self.duplicate_policy == "keep":
                    self._db.execute("ROLLBACK")
                    self._drop_if_unreferenced(sha)  # another association won the race
                    kept = self._get_locked(sop_uid)
                    assert kept is not None
                    return _with_outcome(kept, "duplicate-kept")
                self._db.execute(
                    "INSERT OR REPLACE INTO instance VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        sop_uid,
                        summary.study_uid,
                        summary.series_uid,
                        sha,
                        pending.size,
                        when,
                        calling_ae,
                        member,
                        orjson.dumps(summary.to_json()).decode(),
                    ),
                )
                self._db.execute(
                    "INSERT INTO pending_study VALUES (?, 1)"
                    " ON CONFLICT(study_uid) DO UPDATE SET generation = generation + 1",
                    (summary.study_uid,),
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._drop_if_unreferenced(sha)
                raise InstanceWriteError(f"instance index write failed: {exc}") from exc
            if row is not None and row[0] != sha:
                self._drop_if_unreferenced(row[0])
        return _with_outcome(record, "replaced" if row is not None else "stored")

    def open_stream(self, hashed: bool = True) -> StreamWrite:
        """A tmp file to write an instance into while it is still arriving (see `StreamWrite`)."""
        try:
            tmp, fd = self._spare_tmp.get_nowait()
        except queue.Empty:
            tmp, fd = self._create_tmp()
        with contextlib.suppress(RuntimeError):  # the pool is shut down: no more spares needed
            self._io.submit(self._add_spare_tmp)
        return StreamWrite(self, tmp, fd, hashed)

    def _create_tmp(self) -> tuple[Path, int]:
        tmp = self._tmp / f"{uuid.uuid4().hex}.part"
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise InstanceWriteError(f"cannot create instance file: {exc.strerror or exc}") from exc

    def _add_spare_tmp(self) -> None:
        if self._spare_tmp.qsize() < 2:
            with contextlib.suppress(InstanceWriteError):  # reported when a stream actually needs it
                self._spare_tmp.put(self._create_tmp())

    def flush_stream(self, tmp: Path, fd: int, sha: str, size: int) -> PendingWrite:
        """Flush and place a streamed file on the I/O pool (called by `StreamWrite.finish`)."""
        return PendingWrite(self._io.submit(self._finish_stream, tmp, fd, sha), size)

    def _finish_stream(self, tmp: Path, fd: int, sha: str) -> tuple[str, bool]:
        try:
            try:
                if self.fsync:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise InstanceWriteError(f"cannot flush instance file: {exc.strerror or exc}") from exc
        if self.path_for(sha).exists():
            tmp.unlink(missing_ok=True)
            return sha, False
        self._place(tmp, sha)
        return sha, True

    def _stage(self, data: bytes) -> tuple[str, bool]:
        """Hash, write to tmp, flush, move into place, flush the directory; (sha256, file created).

        Runs on the I/O pool. A placed file is invisible until `commit` indexes it; `abandon` removes it,
        and `reindex_orphans` only ever indexes files that pass the same checks.
        """
        sha = hashlib.sha256(data).hexdigest()
        if self.path_for(sha).exists():
            return sha, False
        stream = self.open_stream(hashed=False)
        stream.write(data)
        stream.raise_if_failed()
        return self._finish_stream(stream.tmp, stream.fd, sha)

    def _place(self, tmp: Path, sha: str) -> None:
        final = self.path_for(sha)
        try:
            os.replace(tmp, final)
            if self.fsync:
                _fsync_dir(final.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise InstanceWriteError(f"cannot place instance file: {exc.strerror or exc}") from exc

    def _drop_if_unreferenced(self, sha: str) -> None:
        still = self._db.execute("SELECT 1 FROM instance WHERE sha256 = ? LIMIT 1", (sha,)).fetchone()
        if still is None:
            self.path_for(sha).unlink(missing_ok=True)

    def study_of(self, sop_uid: str) -> str | None:
        """Study Instance UID of a stored instance (a cheap existence check, no summary decoding)."""
        with self._lock:
            row = self._db.execute("SELECT study_uid FROM instance WHERE sop_uid = ?", (sop_uid,)).fetchone()
        return str(row[0]) if row else None

    def get(self, sop_uid: str) -> StoredInstance | None:
        with self._lock:
            return self._get_locked(sop_uid)

    def _get_locked(self, sop_uid: str) -> StoredInstance | None:
        row = self._db.execute(
            "SELECT summary, sha256, size, received_at, calling_ae, member FROM instance WHERE sop_uid = ?",
            (sop_uid,),
        ).fetchone()
        return _record(row) if row else None

    def read_bytes(self, sop_uid: str) -> bytes | None:
        record = self.get(sop_uid)
        if record is None:
            return None
        return self.path_for(record.sha256).read_bytes()

    def study(self, study_uid: str) -> list[StoredInstance]:
        """Every instance of a study, ordered by series then instance number (translation input)."""
        return self.select(study_uids=[study_uid])

    def select(
        self,
        study_uids: Iterable[str] | None = None,
        series_uids: Iterable[str] | None = None,
        sop_uids: Iterable[str] | None = None,
    ) -> list[StoredInstance]:
        """Instances narrowed by UID lists (None = no constraint); further matching is the caller's."""
        clauses: list[str] = []
        params: list[str] = []
        for column, values in (("study_uid", study_uids), ("series_uid", series_uids), ("sop_uid", sop_uids)):
            if values is not None:
                vals = list(values)
                clauses.append(f"{column} IN ({','.join('?' * len(vals)) or 'NULL'})")
                params.extend(vals)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT summary, sha256, size, received_at, calling_ae, member FROM instance {where}"
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        records = [_record(r) for r in rows]
        records.sort(key=_order)
        return records

    def pending_studies(self) -> dict[str, int]:
        """Studies with instances not yet published as ImagingStudy → their change generation."""
        with self._lock:
            rows = self._db.execute("SELECT study_uid, generation FROM pending_study").fetchall()
        return dict(rows)

    def mark_published(self, study_uid: str, generation: int) -> None:
        """Clear the pending mark, unless instances arrived after `generation` was read."""
        with self._lock:
            self._db.execute(
                "DELETE FROM pending_study WHERE study_uid = ? AND generation = ?", (study_uid, generation)
            )

    def iter_studies(self) -> Iterator[str]:
        with self._lock:
            rows = self._db.execute("SELECT DISTINCT study_uid FROM instance").fetchall()
        for (uid,) in rows:
            yield uid


def open_instance_store(settings: Settings) -> InstanceStore:
    """The store under `settings.resolved_dicom_storage()`: how the CLI obtains it for `/dicomweb`."""
    return InstanceStore(
        settings.resolved_dicom_storage(), settings.dicom_duplicate_policy, settings.dicom_fsync
    )


def _record(row: tuple[str, str, int, str, str, str]) -> StoredInstance:
    summary = InstanceSummary.from_json(orjson.loads(row[0]))
    return StoredInstance(summary, row[1], row[2], row[3], row[4], row[5])


def _with_outcome(record: StoredInstance, outcome: str) -> StoredInstance:
    return dataclasses.replace(record, outcome=outcome)


def _order(record: StoredInstance) -> tuple[int, str, int, str]:
    s = record.summary
    return (s.series_number or 0, s.series_uid, s.instance_number or 0, s.sop_instance_uid)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
