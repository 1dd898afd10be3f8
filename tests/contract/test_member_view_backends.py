"""A member's view of patient data on every backend: the filter (`patient:Patient._has:CareTeam:...`)
runs inside each store's own query, so totals and paging agree with what the member may see."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.contract.conftest import BACKENDS, hub_client

TOKENS: dict[str, Any] = {
    "t-admin": "ops",
    "t-county": {"client": "county-his", "member": "XYRMYY", "role": "member"},
    "t-village": {"client": "village-his", "member": "HSZWSY", "role": "member"},
}


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(params=BACKENDS)
async def client(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with hub_client(request.param, tmp_path, api_tokens=TOKENS, match_review=False) as c:
        yield c


async def _post(c: httpx.AsyncClient, token: str, resource: dict[str, Any]) -> str:
    r = await c.post(f"/fhir/{resource['resourceType']}", json=resource, headers=as_(token))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _total(c: httpx.AsyncClient, token: str, query: str) -> tuple[int, int, bool]:
    r = await c.get(f"/fhir/{query}", headers=as_(token))
    assert r.status_code == 200, r.text
    bundle = r.json()
    more = any(link["relation"] == "next" for link in bundle["link"])
    return bundle["total"], len(bundle.get("entry", [])), more


async def test_a_member_sees_its_persons_only_with_totals_and_paging_right(client: httpx.AsyncClient) -> None:
    orgs = {}
    for member in ("XYRMYY", "HSZWSY"):
        org = {
            "resourceType": "Organization",
            "identifier": [{"system": "urn:yilian:member", "value": member}],
        }
        orgs[member] = f"Organization/{await _post(client, 't-admin', org)}"
    patients = []
    for i in range(3):
        patient = {"resourceType": "Patient", "name": [{"family": "王", "given": [f"伟{i}"]}]}
        patients.append(await _post(client, "t-county", patient))
        for _ in range(2):
            obs = {
                "resourceType": "Observation",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                "subject": {"reference": f"Patient/{patients[-1]}"},
            }
            await _post(client, "t-county", obs)

    assert await _total(client, "t-county", "Observation?code=8867-4&_total=accurate&_count=4") == (
        6,
        4,
        True,
    )
    assert await _total(client, "t-village", "Observation?code=8867-4&_total=accurate") == (0, 0, False)
    assert await _total(client, "t-village", "Patient?family=王&_total=accurate") == (0, 0, False)

    referral = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{patients[1]}"},
        "requester": {"reference": orgs["XYRMYY"]},
        "performer": [{"reference": orgs["HSZWSY"]}],
    }
    await _post(client, "t-county", referral)
    assert await _total(client, "t-village", "Observation?code=8867-4&_total=accurate&_count=1") == (
        2,
        1,
        True,
    )
    assert await _total(client, "t-village", "Patient?family=王&_total=accurate") == (1, 1, False)
    r = await client.get(f"/fhir/Patient/{patients[0]}", headers=as_("t-village"))
    assert r.status_code == 404
