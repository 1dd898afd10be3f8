"""`yilian hl7 journal | replay | send` as a user runs them: real CLI processes, live MLLP and HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import uvicorn

from adapters.hl7v2.listener import MllpService
from fhir_server.hub import Hub
from fhir_server.settings import Settings

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = ROOT / "tests" / "fixtures" / "hl7v2"


async def yilian(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fhir_server", *args, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def live_http(hub: Hub) -> AsyncIterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(hub.app, host="127.0.0.1", port=0, lifespan="off", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        server.should_exit = True
        await task


async def test_send_journal_and_replay_after_fix(
    mllp: MllpService, hl7_hub: Hub, hl7_settings: Settings
) -> None:
    journal = str(hl7_settings.resolved_journal_path())
    # An A40 naming a patient the hub does not know yet fails (AE) and stays in the journal.
    code, out, err = await yilian("hl7", "send", str(FIXTURES / "adt_a40.hl7"), "--port", str(mllp.port))
    assert code == 1 and "MSA|AE|ADT0005" in out and "MRG-1" in out
    code, out, _ = await yilian("hl7", "journal", "--journal", journal, "--status", "error")
    assert code == 0 and "ADT0005" in out and "not known to the hub" in out
    failed_id = next(line.split()[0] for line in out.splitlines() if "ADT0005" in line)
    # The fix: both records get registered (batch file, FHS/BHS), then the A40 is replayed.
    code, out, err = await yilian("hl7", "send", str(FIXTURES / "batch.hl7"), "--port", str(mllp.port))
    assert code == 0 and "2 sent, 2 accepted" in err
    async with live_http(hl7_hub) as base:
        code, out, err = await yilian("hl7", "replay", failed_id, "--journal", journal, "--fhir-base", base)
    assert code == 0, out + err
    assert f"entry {failed_id}: applied" in out
    entry = mllp.journal.get(int(failed_id))
    assert entry is not None and entry.status == "applied" and entry.attempts == 2


async def test_send_reports_unreachable_endpoint(tmp_path: Path) -> None:
    code, _, err = await yilian(
        "hl7", "send", str(FIXTURES / "adt_a04_utf8.hl7"), "--port", "1", "--timeout", "2"
    )
    assert code == 1 and "cannot connect" in err
    code, _, err = await yilian("hl7", "send", str(tmp_path / "missing.hl7"), "--port", "1")
    assert code == 2 and err.strip() == f"cannot read {tmp_path / 'missing.hl7'}: No such file or directory"
