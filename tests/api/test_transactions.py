"""Batch and transaction Bundles: atomicity, processing order, urn:uuid and conditional references."""

from __future__ import annotations

import httpx

MRN = "urn:yilian:member:county-hospital:patient-id"


def _tx(*entries: dict, kind: str = "transaction") -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _post(resource: dict, full_url: str | None = None, if_none_exist: str | None = None) -> dict:
    entry: dict = {"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}}
    if full_url:
        entry["fullUrl"] = full_url
    if if_none_exist:
        entry["request"]["ifNoneExist"] = if_none_exist
    return entry


async def test_urn_uuid_references_are_resolved(client: httpx.AsyncClient) -> None:
    patient_url = "urn:uuid:9f0b0d0e-1111-4a5b-8c9d-000000000001"
    bundle = _tx(
        _post(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "血红蛋白"},
                "subject": {"reference": patient_url},
            },
        ),
        _post({"resourceType": "Patient", "name": [{"text": "李四"}]}, full_url=patient_url),
    )
    r = await client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    obs_location = result["entry"][0]["response"]["location"]
    patient_location = result["entry"][1]["response"]["location"]
    obs = (await client.get(f"/fhir/{obs_location.split('/_history')[0]}")).json()
    assert obs["subject"]["reference"] == patient_location.split("/_history")[0]


async def test_failing_entry_rolls_back_everything(client: httpx.AsyncClient) -> None:
    bundle = _tx(
        _post({"resourceType": "Patient", "name": [{"text": "王五"}]}),
        _post({"resourceType": "Patient", "gender": "bogus"}),
    )
    r = await client.post("/fhir", json=bundle)
    assert r.status_code == 422
    outcome = r.json()
    assert "Bundle.entry[1]" in outcome["issue"][0]["diagnostics"]
    assert (await client.get("/fhir/_history")).json()["total"] == 0


async def test_unresolvable_urn_uuid_fails_transaction(client: httpx.AsyncClient) -> None:
    bundle = _tx(
        _post(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": "urn:uuid:00000000-0000-0000-0000-00000000dead"},
            }
        ),
    )
    r = await client.post("/fhir", json=bundle)
    assert r.status_code == 400
    assert "urn:uuid" in r.json()["issue"][0]["diagnostics"]


async def test_processing_order_delete_before_create(client: httpx.AsyncClient) -> None:
    await client.put("/fhir/Patient/p1", json={"resourceType": "Patient", "id": "p1"})
    bundle = _tx(
        {
            "resource": {"resourceType": "Patient", "id": "p1", "gender": "female"},
            "request": {"method": "PUT", "url": "Patient/p1"},
        },
        {"request": {"method": "GET", "url": "Patient/p1"}},
        {"request": {"method": "DELETE", "url": "Patient/p1"}},
    )
    r = await client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    # DELETE ran first (version 2), then PUT re-created it (version 3), then the GET read it.
    assert entries[2]["response"]["status"] == "204 No Content"
    assert entries[0]["response"]["etag"] == 'W/"3"'
    assert entries[1]["response"]["etag"] == 'W/"3"'


async def test_batch_entries_fail_independently(client: httpx.AsyncClient) -> None:
    bundle = _tx(
        _post({"resourceType": "Patient", "name": [{"text": "赵六"}]}),
        _post({"resourceType": "Patient", "gender": "bogus"}),
        {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
        kind="batch",
    )
    r = await client.post("/fhir", json=bundle)
    assert r.status_code == 200
    entries = r.json()["entry"]
    assert entries[0]["response"]["status"] == "201 Created"
    assert entries[1]["response"]["status"].startswith("422")
    assert entries[1]["response"]["outcome"]["issue"][0]["expression"] == ["Patient.gender"]
    assert entries[2]["response"]["status"].startswith("404")
    assert (await client.get("/fhir/Patient/_history")).json()["total"] == 1


async def test_bundle_must_be_batch_or_transaction(client: httpx.AsyncClient) -> None:
    r = await client.post("/fhir", json={"resourceType": "Bundle", "type": "collection"})
    assert r.status_code == 400
    r = await client.post("/fhir", json={"resourceType": "Patient"})
    assert r.status_code == 400


async def test_transaction_entry_without_request(client: httpx.AsyncClient) -> None:
    r = await client.post("/fhir", json=_tx({"resource": {"resourceType": "Patient"}}))
    assert r.status_code == 400
    assert r.json()["issue"][0]["expression"] == ["Bundle.entry[0].request"]


async def test_return_representation(client: httpx.AsyncClient) -> None:
    bundle = _tx(_post({"resourceType": "Patient", "name": [{"text": "钱七"}]}))
    r = await client.post("/fhir", json=bundle, headers={"Prefer": "return=representation"})
    assert r.json()["entry"][0]["resource"]["name"][0]["text"] == "钱七"


async def test_conditional_put_with_a_non_string_id_is_a_400(client: httpx.AsyncClient) -> None:
    """Found by the random-input test: `"id": true` in a conditional PUT entry used to raise a TypeError."""
    entry = {
        "resource": {"resourceType": "Patient", "id": True},
        "request": {"method": "PUT", "url": "Patient?identifier=urn:x|1"},
    }
    response = await client.post("/fhir", json=_tx(entry))
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert "not a valid FHIR id" in outcome["issue"][0]["diagnostics"]
