"""Every access leaves an AuditEvent: who (address, client), what (resource or query), outcome."""

from __future__ import annotations

import base64

import httpx

from fhir_server.api.access_log import classify
from fhir_server.hub import Hub


async def test_reads_writes_and_searches_are_audited(hub: Hub, client: httpx.AsyncClient) -> None:
    headers = {"User-Agent": "township-his/2.1"}
    pid = (await client.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=headers)).json()["id"]
    await client.get(f"/fhir/Patient/{pid}", headers=headers)
    await client.get("/fhir/Patient/missing", headers=headers)
    await client.get("/fhir/Patient", params={"_id": pid}, headers=headers)
    assert await hub.audit.flush() == 4

    events = (
        await client.get("/fhir/AuditEvent", params={"entity": f"Patient/{pid}", "_count": "50"})
    ).json()
    by_action = sorted(
        (e["resource"]["subtype"][0]["code"], e["resource"]["action"]) for e in events["entry"]
    )
    assert by_action == [("create", "C"), ("read", "R"), ("search-type", "E")]  # the search returned her
    for entry in events["entry"]:
        agent = entry["resource"]["agent"][0]
        assert agent["requestor"] is True and agent["who"]["display"] == "township-his/2.1"
        assert agent["network"]["address"]
    everything = (await client.get("/fhir/AuditEvent", params={"_count": "50"})).json()["entry"]
    outcomes = {e["resource"]["subtype"][0]["code"]: e["resource"] for e in everything}
    failed_read = [e["resource"] for e in everything if e["resource"].get("outcome") == "4"]
    assert failed_read and failed_read[0]["entity"][0]["what"]["reference"] == "Patient/missing"
    search = outcomes["search-type"]
    assert base64.b64decode(search["entity"][0]["query"]).decode() == f"_id={pid}"


async def test_every_patient_a_search_returned_is_named(hub: Hub, client: httpx.AsyncClient) -> None:
    ids = [
        (await client.post("/fhir/Patient", json={"resourceType": "Patient"})).json()["id"] for _ in range(3)
    ]
    for pid in ids[:2]:
        obs = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": "Hb"},
            "subject": {"reference": f"Patient/{pid}"},
        }
        assert (await client.post("/fhir/Observation", json=obs)).status_code == 201
    await hub.audit.flush()
    await client.get("/fhir/Observation", params={"code:text": "Hb"}, headers={"User-Agent": "viewer"})
    await client.get(f"/fhir/Patient/{ids[0]}/$everything", headers={"User-Agent": "viewer"})
    await hub.audit.flush()

    def by_viewer(bundle: dict) -> list[str]:
        return sorted(
            e["resource"]["subtype"][0]["code"]
            for e in bundle.get("entry", [])
            if e["resource"]["agent"][0]["who"]["display"] == "viewer"
        )

    for pid, expected in ((ids[0], ["operation", "search-type"]), (ids[1], ["search-type"]), (ids[2], [])):
        r = await client.get("/fhir/AuditEvent", params={"entity": f"Patient/{pid}", "_count": "50"})
        assert by_viewer(r.json()) == expected, pid


async def test_audit_events_are_valid_r4(hub: Hub, client: httpx.AsyncClient) -> None:
    await client.get("/fhir/metadata")
    await hub.audit.flush()
    bundle = (await client.get("/fhir/AuditEvent")).json()
    for entry in bundle["entry"]:
        assert hub.service.validate(entry["resource"]) == []


def test_classify_follows_the_fhir_url_grammar() -> None:
    assert classify("GET", []) == ("search-system", None, None)
    assert classify("POST", []) == ("transaction", None, None)
    assert classify("GET", ["metadata"]) == ("capabilities", None, None)
    assert classify("POST", ["Patient"]) == ("create", "Patient", None)
    assert classify("GET", ["Patient"]) == ("search-type", "Patient", None)
    assert classify("POST", ["Patient", "_search"]) == ("search-type", "Patient", None)
    assert classify("GET", ["Patient", "1"]) == ("read", "Patient", "1")
    assert classify("PUT", ["Patient", "1"]) == ("update", "Patient", "1")
    assert classify("DELETE", ["Patient", "1"]) == ("delete", "Patient", "1")
    assert classify("GET", ["Patient", "1", "_history"]) == ("history-instance", "Patient", "1")
    assert classify("GET", ["Patient", "1", "_history", "2"]) == ("vread", "Patient", "1")
    assert classify("GET", ["Patient", "1", "Observation"]) == ("search-compartment", "Patient", "1")
    assert classify("GET", ["Patient", "1", "$everything"]) == ("operation", "Patient", "1")


async def test_stop_ends_the_writer_even_when_a_batch_fills_as_it_stops(hub: Hub) -> None:
    """A request's record that fills a batch wakes the writer; a stop in the same instant must still
    end it (Python 3.11's `asyncio.wait_for` swallowed that cancellation, and the writer went back to
    sleep for its whole interval: a shutdown that waited an hour)."""
    import asyncio

    from fhir_server.interactions.audit import AuditTrail
    from fhir_server.model.access_record import AccessRecord

    trail = AuditTrail(hub.service, interval=3600.0, batch=3)
    trail.start()
    await asyncio.sleep(0)  # the writer is waiting for its wake-up
    for n in range(3):  # the third fills the batch: the wake-up is set
        trail.record(AccessRecord("read", "2026-12-01T00:00:00Z", 200, "127.0.0.1", "t", "Patient", str(n)))
    stopping = asyncio.create_task(trail.stop())
    done, _ = await asyncio.wait({stopping}, timeout=5)
    if not done:  # the old behaviour: leave nothing running behind the test
        trail._task.cancel()  # type: ignore[union-attr]
    assert stopping in done, "stop() did not end the audit writer"
    assert await trail.flush() == 0  # everything recorded was written by the stop
