"""Storage worker processes: the hub hands storage-only associations (their socket) to these.

Why processes: a modality sends hundreds of instances per study; per-instance work (parse the header,
hash, write, fsync, index) is CPU-bound Python, and threads share one GIL with the FHIR API. Each worker
runs `storage_scp.serve_storage` per connection against its own handle on the shared instance store
(SQLite WAL + content-addressed files), and reports "association ended, these studies changed" back to
the hub over its control socket, which publishes the ImagingStudy. Connections arrive as file
descriptors over a Unix socketpair (SCM_RIGHTS); the worker is `python -m adapters.dicom.workers`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adapters.dicom import vocabulary as v
from adapters.dicom.ingest import dimse_status, receive
from adapters.dicom.instances import InstanceStore, InstanceWriteError, StreamWrite
from adapters.dicom.part10 import file_meta
from adapters.dicom.storage_scp import InstanceWriter, Policy, serve_storage
from adapters.dicom.summary import InvalidInstance, KnownMeta

log = logging.getLogger(__name__)

NETWORK_TIMEOUT = 60.0
READY_TIMEOUT = 60.0
StoreResult = tuple[int, str | None]


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    control: socket.socket
    reader: threading.Thread


class WorkerPool:
    """N storage worker processes; `dispatch` hands a connected socket to the next one."""

    def __init__(
        self,
        config: dict[str, object],
        count: int,
        on_released: Callable[[list[str], str, str], None],
    ) -> None:
        """`on_released(study_uids, calling_ae, address)`: a worker finished a storage association."""
        self._config = config
        self._on_released = on_released
        self._workers: list[_Worker] = []
        self._next = itertools.count()
        self._lock = threading.Lock()
        self._closing = False
        for _ in range(count):
            self._workers.append(self._spawn())

    def _spawn(self) -> _Worker:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        root = Path(__file__).resolve().parents[2]
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "adapters.dicom.workers", str(theirs.fileno()), json.dumps(self._config)],
            pass_fds=[theirs.fileno()],
            env=env,
        )
        theirs.close()
        ours.settimeout(READY_TIMEOUT)
        try:
            ready = ours.recv(6)  # imports take a while; connections must not queue behind them
        except TimeoutError:
            ready = b""
        ours.settimeout(None)
        if ready != b"ready\n":
            log.error("DICOM storage worker did not start; storage stays in-process")
            process.terminate()
        reader = threading.Thread(target=self._read, args=(ours,), name="dicom-worker-reader", daemon=True)
        reader.start()
        return _Worker(process, ours, reader)

    def _read(self, control: socket.socket) -> None:
        with control.makefile("r", encoding="ascii") as lines:
            for line in lines:
                calling, address, *uids = line.rstrip("\n").split("\t") + ["", ""]
                uids = [u for u in uids if u]
                if uids:
                    self._on_released(uids, calling, address)

    def dispatch(self, conn: socket.socket) -> bool:
        """Send the connection to a worker; False if none is alive (the caller serves it itself)."""
        with self._lock:
            self._replace_dead()
            alive = [w for w in self._workers if w.process.poll() is None]
            if not alive:
                return False
            worker = alive[next(self._next) % len(alive)]
            try:
                socket.send_fds(worker.control, [b"c"], [conn.fileno()])
            except OSError as exc:  # the worker died between poll() and send: serve it ourselves
                log.error("DICOM storage worker unreachable: %s", exc)
                return False
            os.close(conn.detach())  # the worker has its own descriptor now
        return True

    def _replace_dead(self) -> None:
        """A worker that died (crash, OOM kill) is replaced before the next association is handed out."""
        for i, w in enumerate(self._workers):
            if w.process.poll() is not None and not self._closing:
                log.error("DICOM storage worker exited with %s; starting a new one", w.process.returncode)
                w.control.close()
                self._workers[i] = self._spawn()

    def close(self, timeout: float = 10.0) -> None:
        """Stop handing out work; workers finish their associations and exit."""
        self._closing = True
        for w in self._workers:
            with contextlib.suppress(OSError):
                w.control.shutdown(socket.SHUT_WR)
        for w in self._workers:
            try:
                w.process.wait(timeout)
            except subprocess.TimeoutExpired:
                w.process.terminate()
                w.process.wait()
            w.control.close()


class StreamingInstance:
    """One C-STORE dataset streamed into the instance store while it arrives, checked when complete."""

    def __init__(
        self, store: InstanceStore, calling: str, member: str, sop_class: str, sop_instance: str, ts: str
    ) -> None:
        self._store, self._calling, self._member, self._sop = store, calling, member, sop_instance
        header = file_meta(sop_class, sop_instance, ts, calling)
        self._known = KnownMeta(len(header), ts, sop_class)
        self._chunks: list[bytes | memoryview] = [header]
        self._stream: StreamWrite | None = None
        self._error: InstanceWriteError | None = None
        self._duplicate_of = store.study_of(sop_instance) if store.duplicate_policy == "keep" else None
        if self._duplicate_of is None:
            try:
                self._stream = store.open_stream()
                self._stream.write(header)
            except InstanceWriteError as exc:
                self._error = exc

    def write(self, fragment: memoryview) -> None:
        if self._duplicate_of is not None:
            return  # kept as first received; nothing to write
        self._chunks.append(fragment)
        if self._stream is not None:
            self._stream.write(fragment)

    def finish(self) -> StoreResult:
        if self._duplicate_of is not None:
            return v.SUCCESS, self._duplicate_of
        part10 = b"".join(self._chunks)
        try:
            if self._error is not None or self._stream is None:
                raise self._error or InstanceWriteError("no instance file")
            pending = self._stream.finish()
            stored = receive(
                self._store,
                part10,
                self._calling,
                self._member,
                self._sop,
                pending=pending,
                known=self._known,
            )
        except (InvalidInstance, InstanceWriteError) as exc:
            log.warning("C-STORE from %s refused: %s", self._calling, exc)
            return dimse_status(exc), None
        return v.SUCCESS, stored.summary.study_uid

    def abort(self) -> None:
        if self._stream is not None:
            self._stream.discard()


def worker_config(
    storage: Path,
    duplicate_policy: str,
    known_aes: dict[str, str],
    refuse_unknown: bool,
    max_pdu: int,
    fsync: bool = True,
) -> dict[str, object]:
    return {
        "fsync": fsync,
        "storage": str(storage),
        "duplicate_policy": duplicate_policy,
        "known_aes": known_aes,
        "refuse_unknown": refuse_unknown,
        "max_pdu": max_pdu,
    }


def _field(text: str) -> str:
    """A value for the control line: no tab or newline, ASCII (an AE title is; an address is)."""
    return text.replace("\t", " ").replace("\n", " ")


def _worker_main(control_fd: int, config: dict[str, object]) -> None:
    store = InstanceStore(
        Path(str(config["storage"])), str(config["duplicate_policy"]), bool(config["fsync"])
    )
    known = dict(config["known_aes"])  # type: ignore[call-overload]
    policy = Policy(known, bool(config["refuse_unknown"]), int(config["max_pdu"]))  # type: ignore[call-overload]
    control = socket.socket(fileno=control_fd)
    send_lock = threading.Lock()

    def start(calling: str, sop_class: str, sop_instance: str, ts: str) -> InstanceWriter:
        return StreamingInstance(store, calling, known.get(calling, ""), sop_class, sop_instance, ts)

    def serve(fd: int) -> None:
        conn = socket.socket(fileno=fd)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(NETWORK_TIMEOUT)
        calling, address = "", ""
        try:
            address = str(conn.getpeername()[0])
            calling, studies = serve_storage(conn, policy, start)
        except (OSError, ConnectionError) as exc:
            log.warning("storage association failed: %s", exc)
            studies = set()
        finally:
            conn.close()
        if studies:  # one line per association: calling AE, its address, the studies it stored
            line = "\t".join([_field(calling), _field(address), *sorted(studies)]) + "\n"
            with send_lock, contextlib.suppress(OSError):
                control.sendall(line.encode("ascii", "replace"))

    control.sendall(b"ready\n")
    threads: list[threading.Thread] = []
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(control, 16, 4)
        except OSError:
            break
        if not msg and not fds:
            break  # the hub closed the control socket: finish and exit
        for fd in fds:
            t = threading.Thread(target=serve, args=(fd,), name="dicom-storage-association")
            t.start()
            threads.append(t)
        threads = [t for t in threads if t.is_alive()]
    for t in threads:
        t.join()
    control.close()
    store.close()


if __name__ == "__main__":
    # Ctrl-C in a terminal reaches the whole process group; the hub owns shutdown and closes the control
    # socket, after which a worker finishes its associations (nothing half-written) and exits.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _worker_main(int(sys.argv[1]), json.loads(sys.argv[2]))
