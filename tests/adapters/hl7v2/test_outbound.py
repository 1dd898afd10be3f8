"""Outbound ORU^R01 to the requesting member's MLLP endpoint, with retry."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from adapters.hl7v2.client import send_all
from adapters.hl7v2.listener import MllpService
from adapters.hl7v2.mllp import Frame, FrameDecoder, frame
from adapters.hl7v2.outbound import OruDelivery
from adapters.hl7v2.parse import parse
from fhir_server.hub import Hub
from fhir_server.interactions.events import ResourceChanged
from fhir_server.settings import Settings
from tests.adapters.hl7v2.conftest import sample
from tests.adapters.hl7v2.test_commands import yilian


@dataclass
class Change:
    resource_type: str
    resource: dict[str, Any] | None


class MemberHis:
    """A member's HIS MLLP endpoint: answers AE to the first `fail_first` messages, then AA."""

    def __init__(self, fail_first: int) -> None:
        self.fail_first = fail_first
        self.received: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder(1 << 20)
        while data := await reader.read(65536):
            for event in decoder.feed(data):
                if isinstance(event, Frame):
                    self.received.append(event.data)
                    control = parse(event.data).control_id
                    code = "AE" if len(self.received) <= self.fail_first else "AA"
                    writer.write(
                        frame(
                            f"MSH|^~\\&|HIS|FYXWSY|||20240315||ACK|A1|P|2.5\rMSA|{code}|{control}\r".encode()
                        )
                    )
                    await writer.drain()
        writer.close()


async def _report_for_other_member(
    mllp: MllpService, fhir: httpx.AsyncClient, his_port: int, scheme: str = "mllp"
) -> dict[str, Any]:
    """FYXWSY orders (ORM), FYXRMYY results it (ORU); FYXWSY's Organization gets an MLLP Endpoint."""
    acks = await send_all("127.0.0.1", mllp.port, [sample("orm_o01"), sample("oru_r01")])
    assert all(b"MSA|AA" in a for a in acks)
    endpoint = (
        await fhir.post(
            "/fhir/Endpoint",
            json={
                "resourceType": "Endpoint",
                "status": "active",
                "connectionType": {
                    "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                    "code": "hl7v2-mllp",
                },
                "payloadType": [{"text": "ORU^R01"}],
                "address": f"{scheme}://127.0.0.1:{his_port}",
            },
        )
    ).json()
    [org] = [
        e["resource"]
        for e in (
            await fhir.get("/fhir/Organization", params={"identifier": "urn:yilian:member|FYXWSY"})
        ).json()["entry"]
    ]
    org["endpoint"] = [{"reference": f"Endpoint/{endpoint['id']}"}]
    assert (await fhir.put(f"/fhir/Organization/{org['id']}", json=org)).status_code == 200
    [report] = [
        e["resource"]
        for e in (
            await fhir.get(
                "/fhir/DiagnosticReport",
                params={"identifier": "urn:yilian:member:FYXRMYY:filler-order|LAB-7788"},
            )
        ).json()["entry"]
    ]
    return report


def _closed_port() -> int:
    """A local port nobody listens on (yet): connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_final_report_for_another_members_order_is_delivered_with_retry(
    mllp: MllpService, hl7_hub: Hub, fhir: httpx.AsyncClient, hl7_settings: Settings
) -> None:
    his = MemberHis(fail_first=1)
    server = await asyncio.start_server(his.handle, "127.0.0.1", 0)
    report = await _report_for_other_member(mllp, fhir, server.sockets[0].getsockname()[1])

    delivery = OruDelivery(hl7_settings, hl7_hub.sink, backoff=0.01)
    delivery.start()
    await delivery.on_change(Change("DiagnosticReport", report))
    await delivery.on_change(Change("DiagnosticReport", report))  # the same version again: one delivery
    await delivery.on_change(
        Change("DiagnosticReport", {**report, "status": "preliminary"})
    )  # not final: ignored
    await delivery.wait_idle()
    [row] = delivery.outbox.rows()
    await delivery.close()
    server.close()
    await server.wait_closed()

    assert (row.status, row.attempts, row.report) == ("delivered", 2, f"DiagnosticReport/{report['id']}")
    assert len(his.received) == 2  # AE once, then retried and accepted
    oru = parse(his.received[-1])
    assert (oru.message_type, oru.trigger, oru.msh.get(6)) == ("ORU", "R01", "FYXWSY")
    assert oru.first("ORC").get(2) == "PO-0001"  # type: ignore[union-attr]
    assert oru.first("PID").get(3) == "MRN10001" and oru.first("PID").get(5) == "张"  # type: ignore[union-attr]
    obx = oru.all("OBX")
    assert len(obx) == 11
    assert (obx[0].get(2), obx[0].get(5), obx[0].get(8), obx[0].get(14)) == (
        "NM",
        "12.5",
        "H",
        "20240315100000+0800",
    )
    assert obx[2].get(2) == "SN" and obx[2].raw(5) == ">^400"
    assert obx[4].get(5) == "淡黄色，清亮"


async def test_report_for_own_order_or_without_endpoint_is_not_sent(
    mllp: MllpService, hl7_hub: Hub, fhir: httpx.AsyncClient, hl7_settings: Settings
) -> None:
    await send_all("127.0.0.1", mllp.port, [sample("orm_o01"), sample("oru_r01")])
    [report] = [e["resource"] for e in (await fhir.get("/fhir/DiagnosticReport")).json()["entry"]]
    delivery = OruDelivery(hl7_settings, hl7_hub.sink, backoff=0.01)
    assert await delivery.target(report) is None  # FYXWSY has no MLLP endpoint configured
    own = {
        **report,
        "performer": [
            {"reference": (await delivery._ref(report["basedOn"][0]["reference"]))["requester"]["reference"]}
        ],
    }  # type: ignore[index]
    assert (await delivery.deliver(own)).status == "dropped"
    await delivery.close()


async def test_reports_for_orders_the_performer_placed_are_not_noted(hl7_settings: Settings) -> None:
    """Orders written through the hub are remembered, so a report resulting the performer's own order
    (most reports) never reaches the outbox; any other report is noted for `target()` to decide."""
    delivery = OruDelivery(hl7_settings, sink=None)  # type: ignore[arg-type]  # nothing is read here

    def order(requester: str) -> ResourceChanged:
        body = {"resourceType": "ServiceRequest", "id": "o1", "requester": {"reference": requester}}
        return ResourceChanged("ServiceRequest", "o1", 1, "PUT", body)

    report = {
        "resourceType": "DiagnosticReport",
        "id": "r1",
        "status": "final",
        "meta": {"versionId": "1"},
        "basedOn": [{"reference": "ServiceRequest/o1"}],
        "performer": [{"reference": "Organization/lab"}],
    }
    await delivery.on_change(Change("DiagnosticReport", report))  # order unseen here: noted
    await delivery.on_change(order("Organization/lab"))
    await delivery.on_change(Change("DiagnosticReport", report))  # the lab's own order: not noted
    await delivery.on_change(order("Organization/township"))  # the order's latest version counts
    await delivery.on_change(Change("DiagnosticReport", report))
    await delivery.on_change(ResourceChanged("ServiceRequest", "o1", 2, "DELETE", None))  # forgotten
    await delivery.on_change(Change("DiagnosticReport", report))
    assert delivery._incoming == [("DiagnosticReport/r1", "1")] * 3
    delivery.outbox.close()


async def test_pending_delivery_survives_a_restart(
    mllp: MllpService, hl7_hub: Hub, fhir: httpx.AsyncClient, hl7_settings: Settings
) -> None:
    his_port = _closed_port()  # the member's HIS is down
    report = await _report_for_other_member(mllp, fhir, his_port)
    settings = hl7_settings.model_copy(update={"hl7_outbound_retries": 1000})

    first = OruDelivery(settings, hl7_hub.sink, backoff=0.05, timeout=2)
    first.start()
    await first.on_change(Change("DiagnosticReport", report))
    for _ in range(200):  # until the outbox holds it and one attempt failed
        rows = first.outbox.rows()
        if rows and rows[0].attempts >= 1:
            break
        await asyncio.sleep(0.02)
    [row] = rows
    await first.close()  # the hub stops with the delivery still pending
    assert row.status == "pending" and row.last_error

    his = MemberHis(fail_first=0)
    server = await asyncio.start_server(his.handle, "127.0.0.1", his_port)
    second = OruDelivery(settings, hl7_hub.sink, backoff=0.05)  # the hub again, same state file
    second.start()
    await second.wait_idle()
    [row] = second.outbox.rows()
    await second.close()
    server.close()
    await server.wait_closed()
    assert row.status == "delivered"
    assert [parse(m).trigger for m in his.received] == ["R01"]


async def test_outbound_command_lists_and_requeues_a_failed_delivery(
    mllp: MllpService, hl7_hub: Hub, fhir: httpx.AsyncClient, hl7_settings: Settings
) -> None:
    his_port = _closed_port()  # the member's HIS is down for the whole retry budget
    report = await _report_for_other_member(mllp, fhir, his_port)
    settings = hl7_settings.model_copy(update={"hl7_outbound_retries": 2})
    delivery = OruDelivery(settings, hl7_hub.sink, backoff=0.01, timeout=2)
    delivery.start()
    await delivery.on_change(Change("DiagnosticReport", report))
    await delivery.wait_idle()
    journal = str(settings.resolved_journal_path())

    code, out, _ = await yilian("hl7", "outbound", "--journal", journal, "--status", "failed")
    assert code == 0 and f"DiagnosticReport/{report['id']}" in out and f"mllp://127.0.0.1:{his_port}" in out
    [row] = delivery.outbox.rows("failed")
    assert row.attempts == 2
    code, _, err = await yilian("hl7", "outbound", "--journal", journal, "--retry", "999")
    assert code == 1 and "unknown or still pending" in err

    his = MemberHis(fail_first=0)
    server = await asyncio.start_server(his.handle, "127.0.0.1", his_port)
    code, out, _ = await yilian("hl7", "outbound", "--journal", journal, "--retry", str(row.id))
    assert code == 0 and "due again" in out
    await delivery.wait_idle()  # the running worker picks it up
    [done] = delivery.outbox.rows()
    await delivery.close()
    server.close()
    await server.wait_closed()
    assert (done.status, done.attempts) == ("delivered", 1)
    assert len(his.received) == 1


async def test_notes_not_yet_written_are_kept_at_close(
    mllp: MllpService, hl7_hub: Hub, fhir: httpx.AsyncClient, hl7_settings: Settings
) -> None:
    report = await _report_for_other_member(mllp, fhir, 9)
    delivery = OruDelivery(hl7_settings, hl7_hub.sink)  # not started: nothing writes the note yet
    await delivery.on_change(Change("DiagnosticReport", report))
    await delivery.close()
    again = OruDelivery(hl7_settings, hl7_hub.sink)
    [row] = again.outbox.rows()
    await again.close()
    assert (row.report, row.status, row.attempts) == (f"DiagnosticReport/{report['id']}", "pending", 0)


async def test_a_failed_outbox_write_is_retried_without_losing_the_note(
    mllp: MllpService,
    hl7_hub: Hub,
    fhir: httpx.AsyncClient,
    hl7_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    report = await _report_for_other_member(mllp, fhir, 9)
    delivery = OruDelivery(hl7_settings, hl7_hub.sink)
    real_enqueue = delivery.outbox.enqueue
    calls: list[int] = []

    def failing_once(batch: list[tuple[str, str]]) -> int:
        calls.append(len(batch))
        if len(calls) == 1:
            raise sqlite3.OperationalError("database or disk is full")  # the boundary we cannot fill
        return real_enqueue(batch)

    monkeypatch.setattr(delivery.outbox, "enqueue", failing_once)
    monkeypatch.setattr("adapters.hl7v2.outbound.RETRY_AFTER_ERROR", 0.01)
    delivery.start()
    await delivery.on_change(Change("DiagnosticReport", report))
    for _ in range(200):
        if delivery.outbox.rows():
            break
        await asyncio.sleep(0.02)
    [row] = delivery.outbox.rows()
    await delivery.close()
    assert calls == [1, 1] and row.report == f"DiagnosticReport/{report['id']}"


async def test_reports_for_a_requester_without_endpoint_are_dropped_once_then_not_noted_until_it_changes(
    mllp: MllpService, hl7_hub: Hub, fhir: httpx.AsyncClient, hl7_settings: Settings
) -> None:
    """Wired as `yilian serve` wires it: the first report for FYXWSY's order is noted and dropped (no
    endpoint); later versions are not noted at all; once FYXWSY gets an MLLP endpoint over REST, the
    next version is noted and delivered."""
    delivery = OruDelivery(hl7_settings, hl7_hub.sink, backoff=0.01)
    hl7_hub.service.events.subscribe(delivery.on_change)
    delivery.start()
    try:
        await send_all("127.0.0.1", mllp.port, [sample("orm_o01"), sample("oru_r01")])
        await delivery.wait_idle()
        assert [r.status for r in delivery.outbox.rows()] == ["dropped"]

        # a new version of the same report (reissued), then another once the member has an endpoint
        again = sample("oru_r01").replace(b"ORU0001", b"ORU0002").replace(b"105500", b"105600")
        assert b"MSA|AA" in (await send_all("127.0.0.1", mllp.port, [again]))[0]
        await delivery.wait_idle()
        versions = await fhir.get("/fhir/DiagnosticReport/_history")
        assert versions.json()["total"] == 2  # a new version was written...
        assert [r.status for r in delivery.outbox.rows()] == ["dropped"]  # ...and not noted

        his = MemberHis(fail_first=0)
        server = await asyncio.start_server(his.handle, "127.0.0.1", 0)
        await _report_for_other_member(mllp, fhir, server.sockets[0].getsockname()[1])  # endpoint added
        newest = sample("oru_r01").replace(b"ORU0001", b"ORU0003").replace(b"105500", b"105700")
        assert b"MSA|AA" in (await send_all("127.0.0.1", mllp.port, [newest]))[0]
        await delivery.wait_idle()
        statuses = sorted(r.status for r in delivery.outbox.rows())
        server.close()
        await server.wait_closed()
        assert statuses == ["delivered", "dropped"] and len(his.received) == 1
    finally:
        await delivery.close()


async def test_a_merge_does_not_send_a_delivered_report_again(
    mllp: MllpService, hl7_hub: Hub, fhir: httpx.AsyncClient, hl7_settings: Settings
) -> None:
    """The report's patient is merged into another record (an A40 over MLLP): the report gets a new
    version whose subject is the survivor, and the member that ordered it is not sent it twice."""
    his = MemberHis(fail_first=0)
    server = await asyncio.start_server(his.handle, "127.0.0.1", 0)
    report = await _report_for_other_member(mllp, fhir, server.sockets[0].getsockname()[1])
    delivery = OruDelivery(hl7_settings, hl7_hub.sink, backoff=0.01)
    hl7_hub.service.events.subscribe(delivery.on_change)
    delivery.start()
    try:
        await delivery.on_change(Change("DiagnosticReport", report))
        await delivery.wait_idle()
        assert len(his.received) == 1
        a40 = (
            sample("adt_a40")
            .replace(b"|XCWSS|", b"|FYXWSY|")
            .replace(b"C0099^^^XCWSS", b"MRN20002^^^FYXWSY")
            .replace(b"C0100^^^XCWSS", b"MRN10001^^^FYXWSY")
        )
        assert b"MSA|AA" in (await send_all("127.0.0.1", mllp.port, [a40]))[0]
        await delivery.wait_idle()
        moved = (await fhir.get(f"/fhir/DiagnosticReport/{report['id']}")).json()
        assert moved["meta"]["versionId"] == "2" and moved["subject"] != report["subject"]
        assert len(his.received) == 1
        assert [r.status for r in delivery.outbox.rows()] == ["delivered"]
    finally:
        await delivery.close()
        server.close()
        await server.wait_closed()
