"""The hub over HTTP on every backend: conditional create in transactions, rollback, chained search with
_include, paging by the bundle's next links, history. What the storage contract promises, seen from the
REST edge."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.contract.conftest import BACKENDS, hub_client


@pytest.fixture(params=BACKENDS)
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with hub_client(request.param, tmp_path) as c:
        yield c


def _bundle(mrn: str, *, broken: bool = False) -> dict:
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:mrn", "value": mrn}],
        "name": [{"family": "王", "given": ["伟"]}],
    }
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"},
        "valueQuantity": {"value": 72, "system": "http://unitsofmeasure.org", "code": "/min"},
    }
    entries = [
        {
            "fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
            "resource": patient,
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier=urn:mrn|{mrn}"},
        },
        {"resource": obs, "request": {"method": "POST", "url": "Observation"}},
    ]
    if broken:
        # fails inside the write section, after the creates: a version precondition that cannot hold
        entries.append(
            {
                "resource": {"resourceType": "Patient", "id": "gone"},
                "request": {"method": "PUT", "url": "Patient/gone", "ifMatch": 'W/"9"'},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def _search(client: httpx.AsyncClient, url: str) -> dict:
    r = await client.get(url)
    assert r.status_code == 200, r.text
    return r.json()


async def test_conditional_create_chain_include_paging_history(client: httpx.AsyncClient) -> None:
    first = await client.post("/fhir", json=_bundle("1"))
    assert first.status_code == 200, first.text
    assert [e["response"]["status"][:3] for e in first.json()["entry"]] == ["201", "201"]
    again = await client.post("/fhir", json=_bundle("1"))
    assert [e["response"]["status"][:3] for e in again.json()["entry"]] == ["200", "201"]
    assert (await client.post("/fhir", json=_bundle("2", broken=True))).status_code in (409, 412)
    patients = await _search(client, "/fhir/Patient?identifier=urn:mrn|&_total=accurate")
    assert patients["total"] == 1, "the failed transaction left nothing"

    found = await _search(
        client, "/fhir/Observation?subject:Patient.identifier=urn:mrn|1&_include=Observation:subject"
    )
    modes = sorted(e["search"]["mode"] for e in found["entry"])
    assert modes == ["include", "match", "match"]
    assert (await _search(client, "/fhir/Observation?value-quantity=gt70&_summary=count"))["total"] == 2

    for n in range(5):
        await client.post("/fhir/Patient", json={"resourceType": "Patient", "gender": "other", "id": f"x{n}"})
    url: str | None = "/fhir/Patient?gender=other&_count=2&_sort=-_lastUpdated"
    seen: list[str] = []
    while url:
        page = await _search(client, url)
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert len(seen) == len(set(seen)) == 5

    history = await _search(client, "/fhir/Patient/_history?_count=3")
    assert history["total"] == 6 and len(history["entry"]) == 3
