"""Compartments, Patient/$everything, custom SearchParameters with $reindex, over HTTP."""

from __future__ import annotations

import httpx


async def _patient_with_record(client: httpx.AsyncClient) -> str:
    pid = (
        await client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"text": "孙八"}]})
    ).json()["id"]
    for code in ("718-7", "2345-7"):
        await client.post(
            "/fhir/Observation",
            json={
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
                "subject": {"reference": f"Patient/{pid}"},
            },
        )
    await client.post(
        "/fhir/Encounter",
        json={
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{pid}"},
        },
    )
    await client.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"text": "someone else"}]})
    return pid


async def test_compartment_search(client: httpx.AsyncClient) -> None:
    pid = await _patient_with_record(client)
    r = await client.get(f"/fhir/Patient/{pid}/Observation")
    assert r.status_code == 200, r.text
    assert len(r.json()["entry"]) == 2
    r = await client.get(f"/fhir/Patient/{pid}/Observation", params={"code": "718-7"})
    assert len(r.json()["entry"]) == 1
    # literal three-segment paths still mean what the spec says
    assert (await client.get(f"/fhir/Patient/{pid}/_history")).json()["type"] == "history"
    assert (await client.get("/fhir/Patient/x/NotAType")).status_code == 404


async def test_patient_everything(client: httpx.AsyncClient) -> None:
    pid = await _patient_with_record(client)
    bundle = (await client.get(f"/fhir/Patient/{pid}/$everything")).json()
    types = sorted(e["resource"]["resourceType"] for e in bundle["entry"])
    assert types == ["Encounter", "Observation", "Observation", "Patient"]
    only = (await client.get(f"/fhir/Patient/{pid}/$everything", params={"_type": "Encounter"})).json()
    assert sorted(e["resource"]["resourceType"] for e in only["entry"]) == ["Encounter"]
    assert (await client.get("/fhir/Patient/nobody/$everything")).status_code == 404


async def test_custom_search_parameter_and_reindex(client: httpx.AsyncClient) -> None:
    pid = (
        await client.post(
            "/fhir/Patient",
            json={"resourceType": "Patient", "maritalStatus": {"coding": [{"system": "urn:x", "code": "M"}]}},
        )
    ).json()["id"]
    before = await client.get("/fhir/Patient", params={"marital": "M"}, headers={"Prefer": "handling=strict"})
    assert before.status_code == 400
    sp = {
        "resourceType": "SearchParameter",
        "url": "urn:yilian:SearchParameter:patient-marital",
        "name": "marital",
        "status": "active",
        "description": "Marital status",
        "code": "marital",
        "base": ["Patient"],
        "type": "token",
        "expression": "Patient.maritalStatus",
    }
    assert (await client.post("/fhir/SearchParameter", json=sp)).status_code == 201
    r = await client.post("/fhir/Patient/$reindex")
    assert r.status_code == 200 and "reindexed" in r.json()["issue"][0]["diagnostics"]
    found = await client.get("/fhir/Patient", params={"marital": "M"}, headers={"Prefer": "handling=strict"})
    assert found.status_code == 200
    assert [e["resource"]["id"] for e in found.json()["entry"]] == [pid]
    names = {
        p["name"]
        for r in (await client.get("/fhir/metadata")).json()["rest"][0]["resource"]
        if r["type"] == "Patient"
        for p in r["searchParam"]
    }
    assert "marital" in names


async def test_capability_statement_lists_operations(client: httpx.AsyncClient) -> None:
    statement = (await client.get("/fhir/metadata")).json()
    assert statement["fhirVersion"] == "4.0.1"
    rest = statement["rest"][0]
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert {o["name"] for o in patient["operation"]} == {
        "validate",
        "everything",
        "match",
        "merge",
        "mpi-link",
        "mpi-split",
    }
    assert {o["name"] for o in rest["operation"]} == {"reindex"}
    assert len(rest["resource"]) == 146
    assert any(p["name"] == "identifier" for p in patient["searchParam"])
