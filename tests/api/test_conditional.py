"""Conditional create, update, delete and references, and the race that every well-known server loses."""

from __future__ import annotations

import asyncio

import httpx

SYSTEM = "urn:yilian:member:township-3:patient-id"


def _patient(mrn: str, **extra: object) -> dict:
    return {"resourceType": "Patient", "identifier": [{"system": SYSTEM, "value": mrn}], **extra}


async def test_if_none_exist_returns_the_existing_match(client: httpx.AsyncClient) -> None:
    header = {"If-None-Exist": f"identifier={SYSTEM}|M1"}
    first = await client.post("/fhir/Patient", json=_patient("M1"), headers=header)
    assert first.status_code == 201
    again = await client.post("/fhir/Patient", json=_patient("M1", gender="male"), headers=header)
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and "gender" not in again.json()


async def test_if_none_exist_with_many_matches_is_412(client: httpx.AsyncClient) -> None:
    await client.post("/fhir/Patient", json=_patient("DUP"))
    await client.post("/fhir/Patient", json=_patient("DUP"))
    r = await client.post(
        "/fhir/Patient", json=_patient("DUP"), headers={"If-None-Exist": f"identifier={SYSTEM}|DUP"}
    )
    assert r.status_code == 412


async def test_32_parallel_conditional_creates_make_one_resource(client: httpx.AsyncClient) -> None:
    header = {"If-None-Exist": f"identifier={SYSTEM}|RACE"}
    results = await asyncio.gather(
        *(client.post("/fhir/Patient", json=_patient("RACE"), headers=header) for _ in range(32))
    )
    assert sorted(r.status_code for r in results) == [200] * 31 + [201]
    assert len({r.json()["id"] for r in results}) == 1
    found = (await client.get("/fhir/Patient", params={"identifier": f"{SYSTEM}|RACE"})).json()
    assert len(found.get("entry", [])) == 1


async def test_conditional_update_creates_then_updates(client: httpx.AsyncClient) -> None:
    url = f"/fhir/Patient?identifier={SYSTEM}|CU1"
    created = await client.put(url, json=_patient("CU1", gender="male"))
    assert created.status_code == 201
    updated = await client.put(url, json=_patient("CU1", gender="female"))
    assert updated.status_code == 200
    assert updated.json()["id"] == created.json()["id"] and updated.json()["meta"]["versionId"] == "2"
    wrong_id = await client.put(url, json={**_patient("CU1"), "id": "someone-else"})
    assert wrong_id.status_code == 400


async def test_32_parallel_conditional_updates_make_one_resource(client: httpx.AsyncClient) -> None:
    url = f"/fhir/Patient?identifier={SYSTEM}|CU-RACE"
    results = await asyncio.gather(*(client.put(url, json=_patient("CU-RACE")) for _ in range(32)))
    assert sorted(r.status_code for r in results) == [200] * 31 + [201]
    assert len({r.json()["id"] for r in results}) == 1


async def test_conditional_delete(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/fhir/Patient", json=_patient("DEL"))).json()["id"]
    assert (await client.delete(f"/fhir/Patient?identifier={SYSTEM}|DEL")).status_code == 204
    assert (await client.get(f"/fhir/Patient/{pid}")).status_code == 410
    assert (await client.delete(f"/fhir/Patient?identifier={SYSTEM}|DEL")).status_code == 204
    await client.post("/fhir/Patient", json=_patient("D2"))
    await client.post("/fhir/Patient", json=_patient("D2"))
    assert (await client.delete(f"/fhir/Patient?identifier={SYSTEM}|D2")).status_code == 412


async def test_conditional_by_id(client: httpx.AsyncClient) -> None:
    await client.put("/fhir/Patient/known-1", json={"resourceType": "Patient", "id": "known-1"})
    r = await client.post("/fhir/Patient", json=_patient("X"), headers={"If-None-Exist": "_id=known-1"})
    assert r.status_code == 200 and r.json()["id"] == "known-1"


async def test_conditional_patch(client: httpx.AsyncClient) -> None:
    pid = (await client.post("/fhir/Patient", json=_patient("P1"))).json()["id"]
    r = await client.patch(
        f"/fhir/Patient?identifier={SYSTEM}|P1",
        json=[{"op": "add", "path": "/active", "value": False}],
        headers={"Content-Type": "application/json-patch+json"},
    )
    assert r.status_code == 200 and r.json()["id"] == pid and r.json()["active"] is False


async def test_transaction_conditional_references_and_if_none_exist(client: httpx.AsyncClient) -> None:
    existing = (await client.post("/fhir/Patient", json=_patient("TX1"))).json()["id"]
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:7a1c2f6e-0000-4000-8000-000000000001",
                "resource": _patient("TX1"),
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={SYSTEM}|TX1"},
            },
            {
                "resource": {
                    "resourceType": "ServiceRequest",
                    "status": "active",
                    "intent": "order",
                    "subject": {"reference": f"Patient?identifier={SYSTEM}|TX1"},
                    "requester": {"reference": "urn:uuid:7a1c2f6e-0000-4000-8000-000000000001"},
                },
                "request": {"method": "POST", "url": "ServiceRequest"},
            },
        ],
    }
    r = await client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert entries[0]["response"]["status"] == "200 OK"
    location = entries[1]["response"]["location"].split("/_history")[0]
    sr = (await client.get(f"/fhir/{location}")).json()
    assert sr["subject"]["reference"] == f"Patient/{existing}"
    assert sr["requester"]["reference"] == f"Patient/{existing}"


async def test_transaction_conditional_reference_without_match_fails(client: httpx.AsyncClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"text": "x"},
                    "subject": {"reference": f"Patient?identifier={SYSTEM}|NOBODY"},
                },
                "request": {"method": "POST", "url": "Observation"},
            }
        ],
    }
    r = await client.post("/fhir", json=bundle)
    assert r.status_code == 412
    assert "NOBODY" in r.json()["issue"][0]["diagnostics"]
    assert (await client.get("/fhir/_history")).json()["total"] == 0


async def test_transaction_conditional_update_entry(client: httpx.AsyncClient) -> None:
    def bundle(gender: str) -> dict:
        return {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "resource": _patient("TXU", gender=gender),
                    "request": {"method": "PUT", "url": f"Patient?identifier={SYSTEM}|TXU"},
                }
            ],
        }

    first = (await client.post("/fhir", json=bundle("male"))).json()["entry"][0]["response"]
    second = (await client.post("/fhir", json=bundle("female"))).json()["entry"][0]["response"]
    assert first["status"] == "201 Created" and second["status"] == "200 OK"
    assert first["location"].split("/_history")[0] == second["location"].split("/_history")[0]


async def test_same_conditional_create_twice_in_one_transaction(client: httpx.AsyncClient) -> None:
    entry = {
        "resource": {"resourceType": "Organization", "identifier": [{"system": SYSTEM, "value": "ORG"}]},
        "request": {"method": "POST", "url": "Organization", "ifNoneExist": f"identifier={SYSTEM}|ORG"},
    }
    r = await client.post(
        "/fhir", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry, entry]}
    )
    assert r.status_code == 200, r.text
    responses = [e["response"] for e in r.json()["entry"]]
    assert [x["status"] for x in responses] == ["201 Created", "200 OK"]
    assert responses[0]["location"] == responses[1]["location"]
    found = (await client.get("/fhir/Organization", params={"identifier": f"{SYSTEM}|ORG"})).json()
    assert len(found["entry"]) == 1


async def test_conditional_create_and_update_with_same_criteria_name_one_resource(
    client: httpx.AsyncClient,
) -> None:
    criteria = f"identifier={SYSTEM}|BOTH"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": _patient("BOTH", gender="female"),
                "request": {"method": "PUT", "url": f"Patient?{criteria}"},
            },
            {
                "resource": _patient("BOTH"),
                "request": {"method": "POST", "url": "Patient", "ifNoneExist": criteria},
            },
        ],
    }
    r = await client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    found = (await client.get("/fhir/Patient", params={"identifier": f"{SYSTEM}|BOTH"})).json()
    assert len(found["entry"]) == 1 and found["entry"][0]["resource"]["gender"] == "female"
