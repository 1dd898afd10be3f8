"""REST keeps the consortium's rule for 居民身份证 numbers: a wrong GB 11643 check character is 422 naming
the element, on every write path (create, update, transaction) and in `$validate`; nothing is stored."""

from __future__ import annotations

import httpx

from terminology import cn_resident_id

SYSTEM = cn_resident_id.SYSTEM
GOOD = "330183195801303577"
BAD = GOOD[:-1] + ("8" if GOOD[-1] != "8" else "9")  # same number, wrong check character


def _patient(resident_id: str) -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [
            {"system": "urn:yilian:member:DLZWSY:patient-id", "value": "MRN-1"},
            {"system": SYSTEM, "value": resident_id},
        ],
        "name": [{"text": "李秀兰"}],
    }


def _error_at(r: httpx.Response, expression: str) -> dict:
    assert r.status_code == 422, r.text
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    [issue] = [i for i in outcome["issue"] if i["severity"] == "error"]
    assert issue["expression"] == [expression]
    assert "check character" in issue["diagnostics"]
    return issue


async def _stored_patients(client: httpx.AsyncClient) -> int:
    return (await client.get("/fhir/Patient", params={"_summary": "count"})).json()["total"]


async def test_create_with_a_wrong_check_character_is_refused(client: httpx.AsyncClient) -> None:
    _error_at(await client.post("/fhir/Patient", json=_patient(BAD)), "Patient.identifier[1].value")
    assert await _stored_patients(client) == 0
    r = await client.post("/fhir/Patient", json=_patient(GOOD))
    assert r.status_code == 201, r.text
    assert await _stored_patients(client) == 1


async def test_update_and_transaction_are_refused_too(client: httpx.AsyncClient) -> None:
    created = (await client.post("/fhir/Patient", json=_patient(GOOD))).json()
    changed = {**_patient(BAD), "id": created["id"]}
    _error_at(await client.put(f"/fhir/Patient/{created['id']}", json=changed), "Patient.identifier[1].value")
    assert (await client.get(f"/fhir/Patient/{created['id']}")).json()["identifier"][1]["value"] == GOOD
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": _patient(GOOD), "request": {"method": "POST", "url": "Patient"}},
            {"resource": _patient(BAD), "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    r = await client.post("/fhir", json=bundle)
    assert r.status_code == 422, r.text
    assert "identifier[1].value" in r.text
    assert await _stored_patients(client) == 1  # the whole transaction rolled back


async def test_other_systems_and_other_types_are_not_checked(client: httpx.AsyncClient) -> None:
    patient = _patient(GOOD)
    patient["identifier"][1] = {"system": "urn:oid:2.16.156.10011.1.2", "value": BAD}  # not the resident ID
    assert (await client.post("/fhir/Patient", json=patient)).status_code == 201
    practitioner = {"resourceType": "Practitioner", "identifier": [{"system": SYSTEM, "value": BAD}]}
    _error_at(await client.post("/fhir/Practitioner", json=practitioner), "Practitioner.identifier[0].value")


async def test_validate_reports_the_element(client: httpx.AsyncClient) -> None:
    r = await client.post("/fhir/Patient/$validate", json=_patient(BAD))
    issues = [i for i in r.json()["issue"] if i["severity"] == "error"]
    assert [i["expression"] for i in issues] == [["Patient.identifier[1].value"]]
