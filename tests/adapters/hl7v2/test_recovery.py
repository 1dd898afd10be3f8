"""Crash safety: a message journaled but not applied is applied exactly once after restart."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from adapters.hl7v2.client import MllpClient
from adapters.hl7v2.journal import Journal, NewEntry
from adapters.hl7v2.listener import start_mllp
from adapters.hl7v2.parse import header_facts
from fhir_server.hub import Hub, open_hub
from fhir_server.settings import Settings
from tests.adapters.hl7v2.conftest import sample

ROOT = Path(__file__).resolve().parents[3]
PATIENT = "urn:yilian:member:FYXWSY:patient-id|MRN10001"


async def patients(hub: Hub) -> list[dict[str, object]]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.app), base_url="http://t") as client:
        r = await client.get("/fhir/Patient", params={"identifier": PATIENT})
        return [e["resource"] for e in r.json().get("entry", [])]


def journal_received(settings: Settings, raw: bytes) -> None:
    facility, control, mtype = header_facts(raw)
    journal = Journal(settings.resolved_journal_path())
    journal.append([NewEntry(raw, "test", facility, control, mtype, dt.datetime.now(dt.UTC))])
    journal.close()


@contextlib.asynccontextmanager
async def crash_server(settings: Settings, port_file: Path, mode: str) -> AsyncIterator[int]:
    """The hub with its MLLP listener in a child process (`crash_server.py`); yields its port and
    kills it with SIGKILL (the crash) when the block ends."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.adapters.hl7v2.crash_server",
        str(settings.db), str(settings.resolved_journal_path()), str(port_file), mode, cwd=ROOT,
    )  # fmt: skip
    try:
        for _ in range(300):
            if port_file.exists() and port_file.read_text():
                break
            await asyncio.sleep(0.05)
        yield int(port_file.read_text())
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_killed_after_journal_before_apply_is_applied_once_on_restart(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "hub.db", hl7_journal=tmp_path / "journal.db", mllp_port=0)
    port_file = tmp_path / "port"
    enhanced = sample("adt_a04_utf8").replace(b"|P|2.5|||||", b"|P|2.5|||AL|AL|")
    async with (
        crash_server(settings, port_file, "stall") as port,
        MllpClient("127.0.0.1", port, timeout=20) as client,
    ):
        [commit] = await client.send(enhanced)  # CA: the message is on disk
        assert b"MSA|CA|ADT0001" in commit
    journal = Journal(settings.resolved_journal_path())
    assert [e.status for e in journal.entries()] == ["received"]
    journal.close()

    async with open_hub(settings) as hub:
        service = await start_mllp(settings, hub.sink, port=0)  # recovery runs before listening
        try:
            assert service.journal.counts() == {"applied": 1}
            [patient] = await patients(hub)
            assert patient["meta"]["versionId"] == "1"  # type: ignore[index]
            # the sender re-sends after the crash: recognised, answered, not applied again
            async with MllpClient("127.0.0.1", service.port, timeout=20) as client:
                commit, app = await client.send(enhanced, answers=2)
            assert b"MSA|CA|ADT0001" in commit and b"MSA|AA|ADT0001" in app
        finally:
            await service.close()
    async with open_hub(settings) as hub:
        service = await start_mllp(settings, hub.sink, port=0)
        await service.close()
        [patient] = await patients(hub)
        assert patient["meta"]["versionId"] == "1"  # type: ignore[index]


async def test_killed_after_ack_before_the_store_sync_is_not_applied_twice(tmp_path: Path) -> None:
    """The round committed without fsync and the ACK went out; the process dies before the sync stage
    journals the outcome. The commit survives a process crash, so recovery finds the Provenance and
    only marks the message; the sender's re-send is answered, not applied again."""
    settings = Settings(db=tmp_path / "hub.db", hl7_journal=tmp_path / "journal.db", mllp_port=0)
    port_file = tmp_path / "port"
    async with (
        crash_server(settings, port_file, "unsynced") as port,
        MllpClient("127.0.0.1", port, timeout=20) as client,
    ):
        [ack] = await client.send(sample("adt_a04_utf8"))
        assert b"MSA|AA|ADT0001" in ack
        journal = Journal(settings.resolved_journal_path())
        assert [e.status for e in journal.entries()] == ["received"]  # outcome held for the sync
        journal.close()
    async with open_hub(settings) as hub:
        service = await start_mllp(settings, hub.sink, port=0)
        try:
            assert service.journal.counts() == {"applied": 1}
            [patient] = await patients(hub)
            assert patient["meta"]["versionId"] == "1"  # type: ignore[index]
            async with MllpClient("127.0.0.1", service.port, timeout=20) as client:
                [again] = await client.send(sample("adt_a04_utf8"))
            assert b"MSA|AA|ADT0001" in again
            [patient] = await patients(hub)
            assert patient["meta"]["versionId"] == "1"  # type: ignore[index]
        finally:
            await service.close()


async def test_crash_after_store_commit_before_journal_update_is_not_applied_twice(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "hub.db", hl7_journal=tmp_path / "journal.db", mllp_port=0)
    async with open_hub(settings) as hub:
        service = await start_mllp(settings, hub.sink, port=0)
        async with MllpClient("127.0.0.1", service.port, timeout=20) as client:
            await client.send(sample("adt_a04_utf8"))
        await service.close()
    # Simulate the crash window: the store has the message's writes, the journal still says received.
    journal = Journal(settings.resolved_journal_path())
    journal._db.execute("UPDATE message SET status = 'received', ack = NULL")
    journal.close()
    async with open_hub(settings) as hub:
        service = await start_mllp(settings, hub.sink, port=0)
        try:
            [entry] = service.journal.entries()
            assert entry.status == "applied" and entry.ack is not None and b"MSA|AA|ADT0001" in entry.ack
            [patient] = await patients(hub)
            assert patient["meta"]["versionId"] == "1"  # type: ignore[index]
        finally:
            await service.close()


async def test_pending_entries_recovered_in_order(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "hub.db", hl7_journal=tmp_path / "journal.db", mllp_port=0)
    base = sample("adt_a04_utf8")
    for i in range(3):
        journal_received(
            settings, base.replace(b"ADT0001", f"R{i}".encode()).replace("张^三".encode(), f"张^{i}".encode())
        )
    async with open_hub(settings) as hub:
        service = await start_mllp(settings, hub.sink, port=0)
        await service.close()
        [patient] = await patients(hub)
        assert patient["meta"]["versionId"] == "3" and patient["name"][0]["given"] == ["2"]  # type: ignore[index]
