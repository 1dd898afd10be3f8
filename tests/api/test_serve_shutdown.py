"""`yilian serve` stopped with SIGTERM (docker stop, systemd) shuts down as Ctrl-C does: the listeners and
the stores close, held HL7 outcomes reach the journal, and the process exits 0. Before, uvicorn re-raised
SIGTERM with Python's default handler and the process died before any of that ran."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import sys
from pathlib import Path

from adapters.hl7v2.client import MllpClientError, send_all
from tests.adapters.hl7v2.conftest import sample

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_sigterm_closes_everything_and_exits_zero(tmp_path: Path) -> None:
    http, mllp = _free_port(), _free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fhir_server.cli", "serve", "--db", str(tmp_path / "hub.db"),
        "--port", str(http), "--mllp-port", str(mllp), "--dicom-port", "0", "--log-level", "INFO",
        cwd=ROOT, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        for _ in range(300):
            try:
                [ack] = await send_all("127.0.0.1", mllp, [sample("adt_a04_utf8")], timeout=10)
                break
            except MllpClientError:  # not listening yet
                await asyncio.sleep(0.05)
        assert b"MSA|AA|ADT0001" in ack
        proc.send_signal(signal.SIGTERM)
        _, log = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, log.decode()
    assert b"listeners closed" in log
    assert not (tmp_path / "hub.db-wal").exists()  # the store was closed, its WAL checkpointed away
    with sqlite3.connect(tmp_path / "hub.db.hl7-journal.db") as journal:
        assert journal.execute("SELECT status FROM message").fetchall() == [("applied",)]
