"""HL7 traffic is in the audit trail: each inbound message an Import by its sending system, each
outbound ORU an Export to the member that ordered it."""

from __future__ import annotations

import asyncio

import httpx

from adapters.hl7v2.client import send_all
from adapters.hl7v2.listener import MllpService
from adapters.hl7v2.outbound import OruDelivery
from fhir_server.hub import Hub
from fhir_server.settings import Settings
from tests.adapters.hl7v2.conftest import sample
from tests.adapters.hl7v2.test_outbound import Change, MemberHis, _report_for_other_member
from tests.records import search

DCM = "http://dicom.nema.org/resources/ontology/DCM"


async def test_each_inbound_message_is_an_import_by_its_sender(
    mllp: MllpService, hl7_hub: Hub, fhir: httpx.AsyncClient
) -> None:
    acks = await send_all("127.0.0.1", mllp.port, [sample("adt_a04_utf8"), sample("adt_a04_bad_resident_id")])
    assert [b"MSA|AA" in acks[0], b"MSA|AE" in acks[1]] == [True, True]
    await hl7_hub.audit.flush()
    events = await search(fhir, "AuditEvent", type=f"{DCM}|110107")
    assert len(events) == 2
    by_outcome = {e["outcome"]: e for e in events}
    applied, refused = by_outcome["0"], by_outcome["4"]
    assert applied["agent"][0]["who"]["display"].endswith("@FYXWSY")
    assert applied["agent"][0]["network"]["address"] == "127.0.0.1"
    assert applied["subtype"] == [{"system": "http://terminology.hl7.org/CodeSystem/v2-0003", "code": "A04"}]
    whats = [e["what"] for e in applied["entity"]]
    assert whats[0]["identifier"]["value"] == "ADT0001"
    provenance = await fhir.get(f"/fhir/{whats[1]['reference']}")
    assert provenance.status_code == 200  # the message's Provenance: what it wrote
    assert len(refused["entity"]) == 1  # nothing written, no Provenance to name


async def test_an_outbound_report_is_an_export_to_the_ordering_member(
    mllp: MllpService, hl7_hub: Hub, fhir: httpx.AsyncClient, hl7_settings: Settings
) -> None:
    his = MemberHis(fail_first=0)
    server = await asyncio.start_server(his.handle, "127.0.0.1", 0)
    report = await _report_for_other_member(mllp, fhir, server.sockets[0].getsockname()[1])
    delivery = OruDelivery(hl7_settings, hl7_hub.sink, backoff=0.01)
    delivery.start()
    try:
        await delivery.on_change(Change("DiagnosticReport", report))
        await delivery.wait_idle()
    finally:
        await delivery.close()
        server.close()
        await server.wait_closed()
    await hl7_hub.audit.flush()
    (export,) = await search(fhir, "AuditEvent", type=f"{DCM}|110106")
    assert export["agent"][0]["who"]["display"] == "FYXWSY" and export["outcome"] == "0"
    assert {"reference": f"DiagnosticReport/{report['id']}"} in [e["what"] for e in export["entity"]]
    assert {"reference": report["subject"]["reference"]} in [e["what"] for e in export["entity"]]
