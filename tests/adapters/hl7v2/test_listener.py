"""End to end over real sockets: MLLP client → listener → journal → hub (SQLite) → FHIR over HTTP."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any

import httpx
import pytest

from adapters.hl7v2.client import MllpClient, send_all
from adapters.hl7v2.listener import MllpService
from adapters.hl7v2.mllp import frame
from adapters.hl7v2.parse import split_batch
from adapters.hl7v2.transaction import provenance_id
from tests.adapters.hl7v2.conftest import sample


def msa(ack: bytes) -> list[str]:
    line = next(s for s in ack.split(b"\r") if s.startswith(b"MSA"))
    return line.decode().split("|")


def err_segments(ack: bytes, codec: str = "utf-8") -> list[str]:
    return [s.decode(codec) for s in ack.split(b"\r") if s.startswith(b"ERR")]


async def search(fhir: httpx.AsyncClient, rtype: str, **params: str) -> list[dict[str, Any]]:
    r = await fhir.get(f"/fhir/{rtype}", params=params)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


async def send(mllp: MllpService, *names: str) -> list[bytes]:
    return await send_all("127.0.0.1", mllp.port, [sample(n) for n in names])


async def test_adt_orm_oru_ref_with_chinese_text_end_to_end(
    mllp: MllpService, fhir: httpx.AsyncClient
) -> None:
    names = (
        "adt_a04_utf8",
        "adt_a01_gb18030",
        "adt_a08_gbk",
        "adt_a28_nocharset_gb",
        "orm_o01",
        "oru_r01",
        "ref_i12_up",
        "rri_i12",
    )
    acks = await send(mllp, *names)
    assert [msa(a)[1] for a in acks] == ["AA"] * len(names), [a.decode("utf-8", "replace") for a in acks]
    assert [msa(a)[2] for a in acks] == [
        "ADT0001",
        "ADT0002",
        "ADT0003",
        "ADT0004",
        "ORM0001",
        "ORU0001",
        "REF0001",
        "RRI0001",
    ]
    assert b"GB 18030-2000" in acks[1]  # the ACK answers in the message's charset

    [li] = await search(fhir, "Patient", identifier="urn:yilian:member:FYXRMYY:patient-id|ZY20240002")
    assert li["name"][0]["text"] == "李四"
    assert li["address"][0]["line"] == ["江滨路12号|3单元^501"]  # A08 (GBK, escapes) updated the A01 patient
    [wang] = await search(fhir, "Patient", identifier="urn:oid:2.16.156.10011.1.3|330183195801303577")
    assert wang["name"][0]["text"] == "王五"  # empty MSH-18: the village clinic's configured GB 18030
    [zhang] = await search(fhir, "Patient", identifier="urn:yilian:member:FYXWSY:patient-id|MRN10001")
    assert zhang["name"][0]["text"] == "张三"
    [enc] = await search(fhir, "Encounter", identifier="urn:yilian:member:FYXRMYY:visit|ZY-V-0002")
    assert enc["status"] == "finished" and enc["subject"]["reference"] == f"Patient/{li['id']}"

    [sr] = await search(fhir, "ServiceRequest", identifier="urn:yilian:member:FYXWSY:placer-order|PO-0001")
    [report] = await search(
        fhir, "DiagnosticReport", identifier="urn:yilian:member:FYXRMYY:filler-order|LAB-7788"
    )
    assert report["basedOn"] == [{"reference": f"ServiceRequest/{sr['id']}"}]  # the ORU found the ORM's order
    assert report["subject"]["reference"] == f"Patient/{zhang['id']}"
    assert len(report["result"]) == 11
    wbc = (await fhir.get(f"/fhir/{report['result'][0]['reference']}")).json()
    assert wbc["valueQuantity"]["value"] == 12.5 and wbc["code"]["coding"][0]["display"] == "白细胞计数"

    [referral] = await search(
        fhir, "ServiceRequest", identifier="urn:yilian:member:XCWSS:referral|ZZ-2024-0001"
    )
    [task] = await search(fhir, "Task", identifier="urn:yilian:member:XCWSS:referral-task|ZZ-2024-0001")
    assert task["status"] == "accepted" and task["focus"]["reference"] == f"ServiceRequest/{referral['id']}"
    assert referral["note"][0]["text"].startswith("血压控制不佳")  # RRI did not overwrite the referral

    prov = (await fhir.get(f"/fhir/Provenance/{provenance_id('FYXRMYY', 'ORU0001')}")).json()
    assert {"reference": f"DiagnosticReport/{report['id']}"} in prov["target"]
    assert prov["entity"][0]["what"]["identifier"]["value"] == "ORU0001"
    await mllp.pipeline.sync_outcomes()  # applied outcomes wait for the store's fsync
    assert mllp.journal.counts() == {"applied": len(names)}


async def test_resent_message_answered_with_original_ack_and_applied_once(
    mllp: MllpService, fhir: httpx.AsyncClient
) -> None:
    first, again = await send(mllp, "adt_a04_utf8", "adt_a04_utf8")
    assert first == again
    [patient] = await search(fhir, "Patient", identifier="urn:yilian:member:FYXWSY:patient-id|MRN10001")
    assert patient["meta"]["versionId"] == "1"
    await mllp.pipeline.sync_outcomes()  # applied outcomes wait for the store's fsync
    assert mllp.journal.counts() == {"applied": 1}


async def test_applied_outcome_is_journaled_only_after_the_store_sync(
    mllp: MllpService, fhir: httpx.AsyncClient, hl7_settings: Any
) -> None:
    """A round's store commit is not fsynced; until the sync stage has made it durable the journal keeps
    the message `received` (recovery would re-check it), and a re-send meanwhile gets the held ACK."""
    mllp.pipeline.sync_interval = 3600.0  # hold the sync so the in-between state can be observed
    [first] = await send(mllp, "adt_a04_utf8")
    assert msa(first)[1] == "AA"
    assert mllp.journal.counts() == {"received": 1}
    assert await search(fhir, "Patient", identifier="urn:yilian:member:FYXWSY:patient-id|MRN10001")
    [again] = await send(mllp, "adt_a04_utf8")
    assert again == first
    await mllp.pipeline.sync_outcomes()
    assert mllp.journal.counts() == {"applied": 1}
    [entry] = mllp.journal.entries()
    assert entry.ack == first
    with sqlite3.connect(hl7_settings.db) as conn:  # the store's sync committed durably once
        assert conn.execute("SELECT count(*) FROM sync_point").fetchone()[0] == 1


async def test_errors_ae_ar_with_err_segments_journaled(mllp: MllpService, fhir: httpx.AsyncClient) -> None:
    bad_id, no_pid3, unknown = await send(
        mllp, "adt_a04_bad_resident_id", "adt_a04_missing_pid3", "unknown_type"
    )
    assert msa(bad_id)[1:3] == ["AE", "ADT0901"]
    assert any("PID^1^3^2" in e and "102" in e and "check character" in e for e in err_segments(bad_id))
    assert msa(no_pid3)[1] == "AE" and any(
        "101^Required field missing" in e and "PID^1^3" in e for e in err_segments(no_pid3)
    )
    assert msa(unknown)[1] == "AR" and any("200^Unsupported message type" in e for e in err_segments(unknown))
    assert mllp.journal.counts() == {"error": 2, "rejected": 1}
    assert await search(fhir, "Patient", identifier="urn:yilian:member:FYXWSY:patient-id|MRN10901") == []
    [entry] = mllp.journal.entries("rejected")
    assert entry.control_id == "MFN0001" and entry.ack is not None and b"MSA|AR" in entry.ack


async def test_corrected_resend_of_failed_message_is_processed(mllp: MllpService) -> None:
    [bad] = await send(mllp, "adt_a04_bad_resident_id")
    assert msa(bad)[1] == "AE"
    fixed = sample("adt_a04_bad_resident_id").replace(b"330102198005121234", b"330102198005121233")
    [good] = await send_all("127.0.0.1", mllp.port, [fixed])
    assert msa(good)[1] == "AA"
    await mllp.pipeline.sync_outcomes()  # applied outcomes wait for the store's fsync
    assert mllp.journal.counts() == {"applied": 1}


async def test_enhanced_mode_commit_then_application_ack(mllp: MllpService) -> None:
    raw = sample("adt_a04_utf8").replace(b"|P|2.5|||||", b"|P|2.5|||AL|AL|").replace(b"ADT0001", b"ENH0001")
    async with MllpClient("127.0.0.1", mllp.port, timeout=10) as client:
        commit, app = await client.send(raw, answers=2)
        assert msa(commit)[1:3] == ["CA", "ENH0001"]
        assert msa(app)[1:3] == ["AA", "ENH0001"]
        # MSH-16 = ER: only errors get an application ACK
        quiet = raw.replace(b"|AL|AL|", b"|AL|ER|").replace(b"ENH0001", b"ENH0002")
        [commit2] = await client.send(quiet, answers=1)
        assert msa(commit2)[1] == "CA"
        failing = sample("adt_a04_missing_pid3").replace(b"|P|2.5|||||", b"|P|2.5|||AL|ER|")
        commit3, app3 = await client.send(failing, answers=2)
        assert (msa(commit3)[1], msa(app3)[1]) == ("CA", "AE")


async def test_bad_peers_do_not_disturb_others(mllp: MllpService, hl7_settings: Any) -> None:
    good = MllpClient("127.0.0.1", mllp.port, timeout=10)
    await good.__aenter__()
    # not MLLP at all, then a framed message on the same connection still works
    r, w = await asyncio.open_connection("127.0.0.1", mllp.port)
    w.write(b"GET / HTTP/1.1\r\n\r\n" + frame(sample("adt_a04_utf8")))
    await w.drain()
    data = await asyncio.wait_for(r.readuntil(b"\x1c\r"), 10)
    assert b"MSA|AA|ADT0001" in data
    w.close()
    # a peer that disconnects mid-message: nothing journaled for it, nothing acknowledged
    r2, w2 = await asyncio.open_connection("127.0.0.1", mllp.port)
    w2.write(b"\x0b" + sample("orm_o01")[:60])
    await w2.drain()
    w2.close()
    # an oversize message: AR naming the limit, journaled
    big = (
        sample("adt_a28_duplicate_record").replace(b"ADT0006", b"BIG0001")
        + b"NTE|1||"
        + b"X" * (hl7_settings.mllp_max_message_bytes + 10)
        + b"\r"
    )
    [too_big] = await good.send(big)
    assert msa(too_big)[1] == "AR" and b"exceeds" in too_big and b"BIG0001" in too_big
    [ok] = await good.send(sample("oru_r01"))
    assert msa(ok)[1] == "AA"
    await good.close()
    await mllp.pipeline.sync_outcomes()
    counts = mllp.journal.counts()
    assert counts == {"applied": 2, "rejected": 1}


async def test_many_messages_on_one_connection_and_many_connections(
    mllp: MllpService, fhir: httpx.AsyncClient
) -> None:
    template = sample("adt_a28_duplicate_record")

    async def one(c: int) -> list[bytes]:
        async with MllpClient("127.0.0.1", mllp.port, timeout=30) as client:
            for i in range(60):
                client.send_nowait(
                    template.replace(b"ADT0006", f"K{c}-{i}".encode()).replace(b"C0100", f"P{c}x{i}".encode())
                )
            await client.drain()
            return [await client.receive() for _ in range(60)]

    results = await asyncio.gather(*(one(c) for c in range(5)))
    for c, acks in enumerate(results):
        assert [msa(a)[2] for a in acks] == [f"K{c}-{i}" for i in range(60)]  # in order, per connection
        assert all(msa(a)[1] == "AA" for a in acks)
    await mllp.pipeline.sync_outcomes()  # applied outcomes wait for the store's fsync
    assert mllp.journal.counts() == {"applied": 300}
    assert len(await search(fhir, "Patient", identifier="urn:yilian:member:XCWSS:patient-id|P4x59")) == 1


async def test_one_failing_message_in_a_merged_round_fails_alone(
    mllp: MllpService, fhir: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    """A burst is applied as one merged transaction. When that fails, every message is applied on its
    own from a fresh translation, so only the bad one is answered AE and the others are stored whole:
    each result's subject is the Patient created for it, not an id from the rolled-back attempt."""
    caplog.set_level(logging.INFO, logger="adapters.hl7v2.pipeline")
    for _ in range(2):  # two records with one identifier: a conditional update cannot choose (412)
        created = await fhir.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [
            {"system": "urn:yilian:member:XCWSS:patient-id", "value": "P-DUP"}]})  # fmt: skip
        assert created.status_code == 201, created.text
    oru = sample("oru_r01")
    burst = [
        oru.replace(b"ORU0001", f"R{i}".encode())
        .replace(b"MRN10001", f"P-OK{i}".encode())
        .replace(b"PO-0001", f"PO-{i}".encode())
        .replace(b"LAB-7788", f"LAB-{i}".encode())
        for i in range(4)
    ]
    burst.insert(2, sample("adt_a28_duplicate_record").replace(b"C0100", b"P-DUP"))
    async with MllpClient("127.0.0.1", mllp.port, timeout=30) as client:
        for message in burst:
            client.send_nowait(message)
        await client.drain()
        answers = [await client.receive() for _ in burst]
    assert [msa(a)[1] for a in answers] == ["AA", "AA", "AE", "AA", "AA"]
    assert "applying them one by one" in caplog.text  # the burst did go in as one merged transaction
    for i in range(4):
        [report] = await search(
            fhir, "DiagnosticReport", identifier=f"urn:yilian:member:FYXRMYY:filler-order|LAB-{i}"
        )
        subject = await fhir.get(f"/fhir/{report['subject']['reference']}")
        assert subject.status_code == 200, (i, report["subject"])
        assert subject.json()["identifier"][0]["value"] == f"P-OK{i}"


async def test_per_patient_order_kept_within_a_burst(mllp: MllpService, fhir: httpx.AsyncClient) -> None:
    """More updates of one patient than a round holds (`max_batch`): each round is translated while the
    one before is still being stored, and the rounds must still land in arrival order."""
    base = sample("adt_a28_duplicate_record")
    count = 3 * mllp.pipeline.max_batch
    msgs = [
        base.replace(b"ADT0006", f"ORD{i}".encode()).replace("王^五".encode(), f"王^{i}".encode())
        for i in range(count)
    ]
    async with MllpClient("127.0.0.1", mllp.port, timeout=30) as client:
        for m in msgs:
            client.send_nowait(m)
        await client.drain()
        acks = [await client.receive() for _ in msgs]
    assert all(msa(a)[1] == "AA" for a in acks)
    [patient] = await search(fhir, "Patient", identifier="urn:yilian:member:XCWSS:patient-id|C0100")
    assert patient["name"][0]["given"] == [str(count - 1)]  # the last update wins
    assert patient["meta"]["versionId"] == str(count)


async def test_a40_merge_links_patients_and_moves_references(
    mllp: MllpService, fhir: httpx.AsyncClient
) -> None:
    dup_oru = (
        sample("oru_r01").replace(b"MRN10001^^^FYXWSY", b"C0100^^^XCWSS").replace(b"ORU0001", b"ORU0100")
    )
    acks = await send_all(
        "127.0.0.1",
        mllp.port,
        [sample("adt_a28_nocharset_gb"), sample("adt_a28_duplicate_record"), dup_oru],
    )
    assert [msa(a)[1] for a in acks[:3]] == ["AA"] * 3, acks
    [old] = await search(fhir, "Patient", identifier="urn:yilian:member:XCWSS:patient-id|C0100")
    study = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "subject": {"reference": f"Patient/{old['id']}"},
    }
    r = await fhir.post("/fhir/ImagingStudy", json=study)
    assert r.status_code == 201, r.text
    study_id = r.json()["id"]
    acks = [*acks[:3], *await send_all("127.0.0.1", mllp.port, [sample("adt_a40")])]
    assert [msa(a)[1] for a in acks] == ["AA"] * 4, acks[-1]
    [survivor] = await search(fhir, "Patient", identifier="urn:yilian:member:XCWSS:patient-id|C0099")
    # The old MRN now finds both records: the one merged away and the survivor, which keeps it as old.
    found = await search(fhir, "Patient", identifier="urn:yilian:member:XCWSS:patient-id|C0100")
    [old] = [p for p in found if p["id"] != survivor["id"]]
    assert {"system": "urn:yilian:member:XCWSS:patient-id", "value": "C0100", "use": "old"} in [
        {k: i[k] for k in ("system", "value", "use") if k in i} for i in survivor["identifier"]
    ]
    # The A40's PID names only C0099: the 身份证 and address the survivor was registered with stay.
    assert {"system": "urn:oid:2.16.156.10011.1.3", "value": "330183195801303577"} in [
        {"system": i["system"], "value": i["value"]} for i in survivor["identifier"]
    ]
    assert survivor["address"][0]["city"] == "杭州市"
    moved = (await fhir.get(f"/fhir/ImagingStudy/{study_id}")).json()
    assert moved["subject"]["reference"] == f"Patient/{survivor['id']}"
    assert {"other": {"reference": f"Patient/{old['id']}"}, "type": "replaces"} in survivor["link"]
    assert old["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}]
    assert old["active"] is False  # kept, not deleted
    [report] = await search(
        fhir, "DiagnosticReport", identifier="urn:yilian:member:FYXRMYY:filler-order|LAB-7788"
    )
    assert report["subject"]["reference"] == f"Patient/{survivor['id']}"

    # The HIS goes on sending demographics for both numbers: each lands on the survivor (a message
    # naming the merged MRN is about the person who survived), and the merge stays as it was.
    survivor_a08 = (
        sample("adt_a28_duplicate_record")
        .replace(b"C0100", b"C0099")
        .replace(b"ADT^A28^ADT_A05|ADT0006", b"ADT^A08^ADT_A01|ADT0601")
        .replace("王^五".encode(), "王^伍".encode())
    )
    old_a08 = (
        sample("adt_a28_duplicate_record")
        .replace(b"ADT^A28^ADT_A05|ADT0006", b"ADT^A08^ADT_A01|ADT0602")
        .replace(b"19580130", b"19580131")
    )
    acks = await send_all("127.0.0.1", mllp.port, [survivor_a08, old_a08])
    assert [msa(a)[1] for a in acks] == ["AA", "AA"], acks
    [survivor_now] = await search(fhir, "Patient", identifier="urn:yilian:member:XCWSS:patient-id|C0099")
    old_now = (await fhir.get(f"/fhir/Patient/{old['id']}")).json()
    assert survivor_now["name"][0]["given"] == ["五"]  # both updates applied, in order
    assert survivor_now["birthDate"] == "1958-01-31"  # the one naming the old MRN, too
    assert survivor_now["link"] == survivor["link"]
    assert [i["value"] for i in survivor_now["identifier"] if i["system"].endswith("XCWSS:patient-id")] == [
        "C0099",
        "C0100",
    ]  # the member's current MRN is not replaced by the old one its message named
    assert old_now == old  # the record merged away is not written again


async def test_batch_over_mllp(mllp: MllpService) -> None:
    acks = await send_all("127.0.0.1", mllp.port, split_batch(sample("batch")))
    assert [msa(a)[1:3] for a in acks] == [["AA", "BAT0001"], ["AA", "BAT0002"]]


async def test_batch_file_in_one_frame_gets_one_batch_ack(mllp: MllpService, fhir: httpx.AsyncClient) -> None:
    async with MllpClient("127.0.0.1", mllp.port, timeout=10) as client:
        [answer] = await client.send(sample("batch"))
    lines = answer.split(b"\r")
    assert lines[0].startswith(b"BHS|") and b"BTS|2" in lines
    assert [line for line in lines if line.startswith(b"MSA")] == [b"MSA|AA|BAT0001", b"MSA|AA|BAT0002"]
    assert len(await search(fhir, "Patient", identifier="urn:yilian:member:XCWSS:patient-id|C0100")) == 1


async def test_connection_limit_refuses_extra_peers(hl7_settings: Any, hl7_hub: Any) -> None:
    from adapters.hl7v2.listener import start_mllp

    settings = hl7_settings.model_copy(update={"mllp_max_connections": 1})
    service = await start_mllp(settings, hl7_hub.sink, port=0)
    try:
        async with MllpClient("127.0.0.1", service.port, timeout=10) as first:
            r, w = await asyncio.open_connection("127.0.0.1", service.port)
            assert await asyncio.wait_for(r.read(), 10) == b""  # refused: closed at once
            w.close()
            [ack] = await first.send(sample("adt_a04_utf8"))  # the admitted peer is served
            assert msa(ack)[1] == "AA"
    finally:
        await service.close()


async def test_a_taken_port_is_one_clear_error(hl7_settings: Any, hl7_hub: Any) -> None:
    import socket

    from adapters.base import ListenerError
    from adapters.hl7v2.listener import start_mllp

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenerError, match=f"MLLP cannot listen on 127.0.0.1:{port}: Address already"):
            await start_mllp(hl7_settings, hl7_hub.sink, port=port)
    service = await start_mllp(hl7_settings, hl7_hub.sink, port=0)  # the journal was closed, not held
    await service.close()
