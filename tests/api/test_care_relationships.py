"""Member access, the per-person part, over HTTP with three member clients and an admin: a member sees a
person's records when it registered one of them, or a referral (ServiceRequest, Task) names it, unless
an active Consent denies it; everything else answers as if absent, with totals and paging right."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from fhir_server.hub import Hub
from terminology import cn_resident_id
from tests.api.conftest import client_hub

TOKENS: dict[str, Any] = {
    "t-admin": "consortium-ops",
    "t-county": {"client": "county-his", "member": "XYRMYY", "role": "member"},
    "t-town": {"client": "town-his", "member": "ZJXWSY", "role": "member"},
    "t-village": {"client": "village-his", "member": "HSZWSY", "role": "member"},
    "t-village-viewer": {"client": "village-viewer", "member": "HSZWSY", "role": "reader"},
}
CODE = "http://loinc.org|718-7"
LI = cn_resident_id.make("411302", dt.date(1961, 3, 14), 122)


def as_(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    async with client_hub(tmp_path, api_tokens=TOKENS) as opened:
        yield opened


class Consortium:
    """The members' Organizations (written by the admin) and helpers to write as a member."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http
        self.orgs: dict[str, str] = {}

    async def setup(self) -> None:
        for member in ("XYRMYY", "ZJXWSY", "HSZWSY"):
            org = {
                "resourceType": "Organization",
                "identifier": [{"system": "urn:yilian:member", "value": member}],
                "name": member,
            }
            r = await self.http.post("/fhir/Organization", json=org, headers=as_("t-admin"))
            assert r.status_code == 201, r.text
            self.orgs[member] = f"Organization/{r.json()['id']}"

    async def post(self, token: str, resource: dict[str, Any]) -> str:
        r = await self.http.post(f"/fhir/{resource['resourceType']}", json=resource, headers=as_(token))
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    async def patient(self, token: str, member: str, family: str, **more: Any) -> str:
        body = {
            "resourceType": "Patient",
            "name": [{"family": family, "given": ["秀兰"]}],
            "managingOrganization": {"reference": self.orgs[member]},
            **more,
        }
        return await self.post(token, body)

    async def observation(self, token: str, patient: str, **more: Any) -> str:
        system, code = CODE.split("|")
        body = {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": system, "code": code}]},
            "subject": {"reference": f"Patient/{patient}"},
            **more,
        }
        return await self.post(token, body)

    async def referral(self, token: str, patient: str, requester: str, performer: str) -> str:
        return await self.post(
            token,
            {
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "subject": {"reference": f"Patient/{patient}"},
                "requester": {"reference": self.orgs[requester]},
                "performer": [{"reference": self.orgs[performer]}],
            },
        )

    async def search(self, token: str, query: str) -> dict[str, Any]:
        r = await self.http.get(f"/fhir/{query}", headers=as_(token))
        assert r.status_code == 200, r.text
        return dict(r.json())

    async def ids(self, token: str, query: str) -> set[str]:
        bundle = await self.search(token, query)
        return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}

    async def status(self, token: str, path: str) -> int:
        return (await self.http.get(f"/fhir/{path}", headers=as_(token))).status_code


@pytest.fixture
async def net(http: httpx.AsyncClient) -> Consortium:
    consortium = Consortium(http)
    await consortium.setup()
    return consortium


async def test_a_county_patient_is_absent_for_the_village_until_a_referral_names_it(net: Consortium) -> None:
    county = await net.patient("t-county", "XYRMYY", "王")
    county_obs = [await net.observation("t-county", county) for _ in range(3)]
    village = await net.patient("t-village", "HSZWSY", "张")
    village_obs = await net.observation("t-village", village)

    for token in ("t-village", "t-village-viewer"):
        for path in (
            f"Patient/{county}",
            f"Patient/{county}/$everything",
            f"Patient/{county}/_history",
            f"Patient/{county}/_history/1",
            f"Observation/{county_obs[0]}",
        ):
            assert await net.status(token, path) == 404, (token, path)
    assert await net.status("t-village", f"Patient/{village}") == 200
    assert await net.status("t-county", f"Patient/{village}") == 404
    assert await net.ids("t-village", "Patient?name=秀兰") == {village}
    assert await net.ids("t-county", "Patient?name=秀兰") == {county}
    assert await net.ids("t-admin", "Patient?name=秀兰") == {county, village}
    found = await net.search("t-village", f"Observation?code={CODE}&_total=accurate&_count=1")
    assert found["total"] == 1 and [e["resource"]["id"] for e in found["entry"]] == [village_obs]
    assert not any(link["relation"] == "next" for link in found["link"])
    assert await net.ids("t-village", f"Patient/{county}/Observation") == set()

    await net.referral("t-county", county, requester="XYRMYY", performer="HSZWSY")

    assert await net.status("t-village", f"Patient/{county}") == 200
    assert await net.status("t-village-viewer", f"Observation/{county_obs[0]}") == 200
    assert await net.ids("t-village", "Patient?name=秀兰") == {county, village}
    found = await net.search("t-village", f"Observation?code={CODE}&_total=accurate&_count=2")
    assert found["total"] == 4 and len(found["entry"]) == 2
    assert any(link["relation"] == "next" for link in found["link"])
    everything = await net.search("t-village", f"Patient/{county}/$everything")
    assert {e["resource"]["id"] for e in everything["entry"]} >= {county, *county_obs}
    # The township has no relationship with either.
    assert await net.ids("t-town", "Patient?name=秀兰") == set()
    assert await net.ids("t-town", f"Observation?code={CODE}") == set()


async def test_a_deny_consent_removes_a_member_and_its_withdrawal_restores_it(
    net: Consortium, http: httpx.AsyncClient
) -> None:
    county = await net.patient("t-county", "XYRMYY", "王")
    await net.referral("t-county", county, requester="XYRMYY", performer="HSZWSY")
    assert await net.status("t-village", f"Patient/{county}") == 200
    consent: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{county}"},
        "provision": {
            "type": "deny",
            "actor": [
                {
                    "role": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                "code": "IRCP",
                            }
                        ]
                    },
                    "reference": {"reference": net.orgs["HSZWSY"]},
                }
            ],
        },
    }
    consent_id = await net.post("t-county", consent)
    assert await net.status("t-village", f"Patient/{county}") == 404
    assert await net.ids("t-village", "Patient?name=秀兰") == set()
    assert await net.status("t-county", f"Patient/{county}") == 200

    consent = {**consent, "id": consent_id, "status": "inactive"}
    r = await http.put(f"/fhir/Consent/{consent_id}", json=consent, headers=as_("t-county"))
    assert r.status_code == 200, r.text
    assert await net.status("t-village", f"Patient/{county}") == 200

    # A permit grants a member with no other relationship.
    assert await net.status("t-town", f"Patient/{county}") == 404
    permit = {**consent, "status": "active", "provision": {**consent["provision"], "type": "permit"}}
    permit["provision"]["actor"] = [
        {**permit["provision"]["actor"][0], "reference": {"reference": net.orgs["ZJXWSY"]}}
    ]
    del permit["id"]
    await net.post("t-county", permit)
    assert await net.status("t-town", f"Patient/{county}") == 200


async def test_a_referral_names_the_person_so_every_record_of_hers_is_seen(net: Consortium) -> None:
    ident = [{"system": cn_resident_id.SYSTEM, "value": LI}]
    county = await net.patient("t-county", "XYRMYY", "李", identifier=ident)
    town = await net.patient("t-town", "ZJXWSY", "李", identifier=ident)  # the same person: one master
    county_obs = await net.observation("t-county", county)
    assert await net.status("t-village", f"Patient/{county}") == 404

    # The township refers its own record to the village clinic: the village sees the person, county's too.
    await net.referral("t-town", town, requester="ZJXWSY", performer="HSZWSY")
    assert await net.status("t-village", f"Patient/{county}") == 200
    assert await net.status("t-village", f"Observation/{county_obs}") == 200
    assert await net.status("t-town", f"Observation/{county_obs}") == 200
    seen = await net.ids("t-village", "Patient?family=李")
    assert {county, town} <= seen and len(seen) == 3  # and the master


async def test_what_an_include_adds_is_checked_and_what_a_member_cannot_scope_is_refused(
    net: Consortium, http: httpx.AsyncClient
) -> None:
    county = await net.patient("t-county", "XYRMYY", "王")
    county_obs = await net.observation("t-county", county)
    village = await net.patient("t-village", "HSZWSY", "张")
    member = {"hasMember": [{"reference": f"Observation/{county_obs}"}]}
    village_obs = await net.observation("t-village", village, **member)
    bundle = await net.search("t-village", f"Observation?_id={village_obs}&_include=Observation:has-member")
    assert [e["resource"]["id"] for e in bundle["entry"]] == [village_obs]
    bundle = await net.search("t-admin", f"Observation?_id={village_obs}&_include=Observation:has-member")
    assert len(bundle["entry"]) == 2

    for path in ("?_type=Patient,Observation", "_history", "Observation/_history"):
        r = await http.get(f"/fhir/{path}", headers=as_("t-village"))
        assert r.status_code == 403 and "member client" in r.json()["issue"][0]["diagnostics"], r.text
    assert await net.status("t-village", "Organization/_history") == 200

    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{county}"}},
            {"request": {"method": "GET", "url": f"Patient/{village}"}},
        ],
    }
    r = await http.post("/fhir", json=batch, headers=as_("t-village"))
    assert [e["response"]["status"][:3] for e in r.json()["entry"]] == ["404", "200"]


async def test_care_teams_explain_access_and_no_client_writes_one(
    net: Consortium, http: httpx.AsyncClient
) -> None:
    county = await net.patient("t-county", "XYRMYY", "王")
    await net.referral("t-county", county, requester="XYRMYY", performer="HSZWSY")
    team = (await net.search("t-admin", f"CareTeam?patient=Patient/{county}"))["entry"][0]["resource"]
    roles = {
        p["member"]["identifier"]["value"]: {c["coding"][0]["code"] for c in p["role"]}
        for p in team["participant"]
    }
    assert roles == {"XYRMYY": {"registered", "requester"}, "HSZWSY": {"performer"}}
    assert team["subject"] == {"reference": f"Patient/{county}"}
    # The hub writes it without running the validator on each write; it is valid all the same.
    r = await http.post("/fhir/CareTeam/$validate", json=team, headers=as_("t-admin"))
    assert r.status_code == 200 and not [i for i in r.json()["issue"] if i["severity"] == "error"], r.text

    r = await http.put(f"/fhir/CareTeam/{team['id']}", json=team, headers=as_("t-admin"))
    assert r.status_code == 403, r.text
    assert (await http.delete(f"/fhir/CareTeam/{team['id']}", headers=as_("t-county"))).status_code == 403
    # A member's own CareTeam claiming access for it is refused, so it can never grant any.
    own = {
        "resourceType": "CareTeam",
        "meta": {"security": [{"system": "urn:yilian:care:member", "code": "ZJXWSY"}]},
        "subject": {"reference": f"Patient/{county}"},
    }
    r = await http.post("/fhir/CareTeam", json=own, headers=as_("t-town"))
    assert r.status_code == 403, r.text
    assert await net.status("t-town", f"Patient/{county}") == 404


async def test_a_member_client_sees_the_patient_it_registers_without_naming_itself(
    net: Consortium, http: httpx.AsyncClient
) -> None:
    r = await http.post(
        "/fhir/Patient", json={"resourceType": "Patient", "name": [{"text": "赵六"}]}, headers=as_("t-town")
    )
    assert r.status_code == 201, r.text
    assert r.json()["managingOrganization"] == {
        "identifier": {"system": "urn:yilian:member", "value": "ZJXWSY"}
    }
    assert await net.status("t-town", f"Patient/{r.json()['id']}") == 200
    assert await net.status("t-county", f"Patient/{r.json()['id']}") == 404


async def test_break_glass_reads_beyond_the_policy_and_is_audited_as_emergency_treatment(
    net: Consortium, http: httpx.AsyncClient, hub: Hub, caplog: pytest.LogCaptureFixture
) -> None:
    county = await net.patient("t-county", "XYRMYY", "王")
    glass = {**as_("t-village"), "X-Break-Glass": quote("急诊抢救, unconscious on arrival")}
    assert await net.status("t-village", f"Patient/{county}") == 404
    r = await http.get(f"/fhir/Patient/{county}/$everything", headers=glass)
    assert r.status_code == 200 and r.json()["entry"][0]["resource"]["id"] == county, r.text
    assert "break-glass read by village-his" in caplog.text and "急诊" not in caplog.text

    r = await http.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=glass)
    assert r.status_code == 400 and "does not apply to a POST" in r.json()["issue"][0]["diagnostics"]
    r = await http.get(f"/fhir/Patient/{county}", headers={**glass, "X-Break-Glass": " "})
    assert r.status_code == 400 and "reason" in r.json()["issue"][0]["diagnostics"]

    await hub.audit.flush()
    etreat = "http://terminology.hl7.org/CodeSystem/v3-ActReason|ETREAT"
    events = await net.search("t-admin", f"AuditEvent?_security={etreat}")
    assert len(events["entry"]) == 1
    event = events["entry"][0]["resource"]
    assert event["purposeOfUse"][0]["text"] == "急诊抢救, unconscious on arrival"
    assert event["agent"][0]["who"]["identifier"]["value"] == "HSZWSY"
    assert event["entity"][0]["what"] == {"reference": f"Patient/{county}"}
    # An ordinary read afterwards is back inside the policy.
    assert await net.status("t-village", f"Patient/{county}") == 404


async def test_a_member_writes_its_own_records_and_for_the_persons_it_sees_only(
    net: Consortium, http: httpx.AsyncClient
) -> None:
    county = await net.patient("t-county", "XYRMYY", "王")
    record = (await http.get(f"/fhir/Patient/{county}", headers=as_("t-county"))).json()

    async def refused(r: httpx.Response, why: str) -> None:
        assert r.status_code == 403 and why in r.json()["issue"][0]["diagnostics"], r.text

    await refused(
        await http.put(f"/fhir/Patient/{county}", json=record, headers=as_("t-village")), "own Patient"
    )
    await refused(await http.delete(f"/fhir/Patient/{county}", headers=as_("t-village")), "own Patient")
    theirs = {"resourceType": "Patient", "managingOrganization": {"reference": net.orgs["XYRMYY"]}}
    await refused(await http.post("/fhir/Patient", json=theirs, headers=as_("t-village")), "own Patient")
    system, code = CODE.split("|")
    obs = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": f"Patient/{county}"},
    }
    await refused(
        await http.post("/fhir/Observation", json=obs, headers=as_("t-village")), "no care relationship"
    )
    # Nor can it give itself access by writing a referral that names it.
    referral = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{county}"},
        "requester": {"reference": net.orgs["HSZWSY"]},
        "performer": [{"reference": net.orgs["HSZWSY"]}],
    }
    await refused(await http.post("/fhir/ServiceRequest", json=referral, headers=as_("t-village")), "no care")
    assert await net.status("t-village", f"Patient/{county}") == 404

    # Its own new patient and her first result, in one transaction.
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:1",
                "resource": {"resourceType": "Patient"},
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {**obs, "subject": {"reference": "urn:uuid:1"}},
                "request": {"method": "POST", "url": "Observation"},
            },
        ],
    }
    r = await http.post("/fhir", json=bundle, headers=as_("t-village"))
    assert r.status_code == 200, r.text

    # Referred, the village writes results for her; the county's Task stays the county's.
    await net.referral("t-county", county, requester="XYRMYY", performer="HSZWSY")
    assert (await http.post("/fhir/Observation", json=obs, headers=as_("t-village"))).status_code == 201
    task = {
        "resourceType": "Task",
        "status": "requested",
        "intent": "order",
        "for": {"reference": f"Patient/{county}"},
        "requester": {"reference": net.orgs["XYRMYY"]},
        "owner": {"reference": net.orgs["XYRMYY"]},
    }
    task_id = await net.post("t-county", task)
    done = {**task, "id": task_id, "status": "completed"}
    await refused(
        await http.put(f"/fhir/Task/{task_id}", json=done, headers=as_("t-village")), "requested or owns"
    )
    assert (await http.put(f"/fhir/Task/{task_id}", json=done, headers=as_("t-county"))).status_code == 200
