"""Search over HTTP against a real hub (SQLite file): parameter types, modifiers, chains, _has,
includes, sorting, paging links, strict/lenient handling, _summary/_elements, POST _search, system search."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest

BASE = "/fhir"


async def create(client: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    rtype = resource["resourceType"]
    if "id" in resource:
        r = await client.put(f"{BASE}/{rtype}/{resource['id']}", json=resource)
    else:
        r = await client.post(f"{BASE}/{rtype}", json=resource)
    assert r.status_code in (200, 201), r.text
    return str(r.json()["id"])


async def search(client: httpx.AsyncClient, path: str, **headers: str) -> dict[str, Any]:
    r = await client.get(f"{BASE}/{path}", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
    return body


def ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((lk["url"] for lk in bundle["link"] if lk["relation"] == relation), None)


@pytest.fixture
async def people(client: httpx.AsyncClient) -> dict[str, str]:
    made = {}
    made["zhang"] = await create(
        client,
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:mrn", "value": "001"}],
            "name": [{"family": "张", "given": ["三丰"]}],
            "gender": "male",
            "birthDate": "1960-05-02",
            "telecom": [{"system": "phone", "value": "13800001111"}],
        },
    )
    made["muller"] = await create(
        client,
        {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:mrn", "value": "002"}],
            "name": [{"family": "Müller", "given": ["Zoë"]}],
            "gender": "female",
            "birthDate": "1985",
        },
    )
    made["nobirth"] = await create(
        client, {"resourceType": "Patient", "name": [{"family": "Wang", "given": ["Wei"]}], "gender": "male"}
    )
    return made


async def test_string_chinese_and_accents(client: httpx.AsyncClient, people: dict[str, str]) -> None:
    assert ids(await search(client, "Patient?name=张三")) == [people["zhang"]]
    assert ids(await search(client, "Patient?family=张")) == [people["zhang"]]
    assert ids(await search(client, "Patient?name=muller")) == [people["muller"]]
    assert ids(await search(client, "Patient?name=MÜL")) == [people["muller"]]
    assert ids(await search(client, "Patient?name:exact=Müller")) == [people["muller"]]
    assert ids(await search(client, "Patient?name:exact=muller")) == []
    assert ids(await search(client, "Patient?name:contains=ll")) == [people["muller"]]
    assert ids(await search(client, "Patient?given=zoe")) == [people["muller"]]


async def test_token_forms_and_modifiers(client: httpx.AsyncClient, people: dict[str, str]) -> None:
    assert ids(await search(client, "Patient?identifier=urn:mrn|001")) == [people["zhang"]]
    assert ids(await search(client, "Patient?identifier=001")) == [people["zhang"]]
    assert ids(await search(client, "Patient?identifier=|001")) == []
    assert sorted(ids(await search(client, "Patient?identifier=urn:mrn|"))) == sorted(
        [people["zhang"], people["muller"]]
    )
    assert sorted(ids(await search(client, "Patient?gender:not=male"))) == [people["muller"]]
    assert ids(await search(client, "Patient?identifier:missing=true")) == [people["nobirth"]]
    assert ids(await search(client, "Patient?phone=13800001111")) == [people["zhang"]]
    assert sorted(ids(await search(client, "Patient?gender=male,female"))) == sorted(people.values())
    assert ids(await search(client, f"Patient?_id={people['muller']}")) == [people["muller"]]


async def test_date_prefixes_use_precision(client: httpx.AsyncClient, people: dict[str, str]) -> None:
    assert ids(await search(client, "Patient?birthdate=1960")) == [people["zhang"]]
    assert ids(await search(client, "Patient?birthdate=1960-05-02")) == [people["zhang"]]
    # 1985 (a whole year) is not *within* 1985-03
    assert ids(await search(client, "Patient?birthdate=1985-03")) == []
    assert ids(await search(client, "Patient?birthdate=gt1970")) == [people["muller"]]
    assert ids(await search(client, "Patient?birthdate=lt1970")) == [people["zhang"]]
    assert ids(await search(client, "Patient?birthdate=sa1984-12-31")) == [people["muller"]]
    assert ids(await search(client, "Patient?birthdate=eb1961")) == [people["zhang"]]
    assert sorted(ids(await search(client, "Patient?birthdate=ne1960"))) == [people["muller"]]
    assert ids(await search(client, "Patient?birthdate=ge1960&birthdate=le1960-12-31")) == [people["zhang"]]
    assert ids(await search(client, "Patient?birthdate:missing=true")) == [people["nobirth"]]


async def test_reference_chain_has_and_includes(client: httpx.AsyncClient, people: dict[str, str]) -> None:
    org = await create(client, {"resourceType": "Organization", "name": "县人民医院"})
    pid = people["zhang"]
    await client.put(
        f"{BASE}/Patient/{pid}",
        json={
            "resourceType": "Patient",
            "id": pid,
            "identifier": [{"system": "urn:mrn", "value": "001"}],
            "name": [{"family": "张", "given": ["三丰"]}],
            "managingOrganization": {"reference": f"Organization/{org}"},
        },
    )
    enc = await create(
        client,
        {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"code": "AMB"},
            "subject": {"reference": f"Patient/{pid}"},
        },
    )
    obs = await create(
        client,
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4", "display": "Heart rate"}]},
            "subject": {"reference": f"Patient/{pid}"},
            "encounter": {"reference": f"Encounter/{enc}"},
            "valueQuantity": {"value": 72, "system": "http://unitsofmeasure.org", "code": "/min"},
        },
    )
    assert ids(await search(client, f"Observation?subject=Patient/{pid}")) == [obs]
    assert ids(await search(client, f"Observation?subject={pid}")) == [obs]
    assert ids(await search(client, f"Observation?subject:Patient={pid}")) == [obs]
    assert ids(await search(client, "Observation?subject:Patient.identifier=urn:mrn|001")) == [obs]
    # three resources: Observation -> Encounter -> Patient -> Organization
    assert ids(await search(client, "Observation?encounter.subject:Patient.organization.name=县人民")) == [
        obs
    ]
    assert ids(await search(client, "Observation?encounter.subject:Patient.organization.name=other")) == []
    assert ids(await search(client, "Patient?_has:Observation:subject:code=8867-4")) == [pid]
    assert (
        ids(await search(client, "Patient?_has:Observation:subject:_has:Encounter:subject:status=finished"))
        == []
    )
    assert ids(
        await search(client, "Organization?_has:Patient:organization:_has:Observation:subject:code=8867-4")
    ) == [org]
    assert ids(await search(client, "Observation?value-quantity=72")) == [obs]
    assert ids(await search(client, "Observation?value-quantity=gt71.5|http://unitsofmeasure.org|/min")) == [
        obs
    ]
    assert ids(await search(client, "Observation?value-quantity=lt72")) == []
    assert ids(await search(client, "Observation?code-value-quantity=8867-4$ge70")) == [obs]
    assert ids(await search(client, "Observation?code:text=heart")) == [obs]
    bundle = await search(
        client, "Observation?code=8867-4&_include=Observation:subject&_include=Observation:encounter"
    )
    assert ids(bundle) == [obs] and sorted(ids(bundle, "include")) == sorted([pid, enc])
    bundle = await search(
        client, f"Patient?_id={pid}&_revinclude=Observation:subject&_revinclude=Encounter:subject"
    )
    assert sorted(ids(bundle, "include")) == sorted([obs, enc])
    bundle = await search(
        client, "Observation?code=8867-4&_include=Observation:subject&_include:iterate=Patient:organization"
    )
    assert sorted(ids(bundle, "include")) == sorted([pid, org])
    bundle = await search(client, "Observation?code=8867-4&_include=*")
    assert sorted(ids(bundle, "include")) == sorted([pid, enc])


async def test_include_iterate_cycle_terminates(client: httpx.AsyncClient) -> None:
    await create(
        client,
        {
            "resourceType": "Patient",
            "id": "cyc-a",
            "link": [{"other": {"reference": "Patient/cyc-b"}, "type": "seealso"}],
        },
    )
    await create(
        client,
        {
            "resourceType": "Patient",
            "id": "cyc-b",
            "link": [{"other": {"reference": "Patient/cyc-a"}, "type": "seealso"}],
        },
    )
    bundle = await search(client, "Patient?_id=cyc-a&_include:iterate=Patient:link")
    assert ids(bundle) == ["cyc-a"] and ids(bundle, "include") == ["cyc-b"]
    bundle = await search(client, "Patient?_id=cyc-a&_revinclude:iterate=Patient:link")
    assert ids(bundle, "include") == ["cyc-b"]


async def test_sort_and_keyset_paging_links(client: httpx.AsyncClient) -> None:
    for i in range(7):
        await create(
            client,
            {
                "resourceType": "Patient",
                "id": f"s{i}",
                "name": [{"family": f"F{i % 3}"}],
                "birthDate": f"19{50 + i}",
            },
        )
    bundle = await search(client, "Patient?_sort=family,-birthdate&_count=3")
    seen = ids(bundle)
    assert seen == ["s6", "s3", "s0"]
    pages = [seen]
    while (nxt := link(bundle, "next")) is not None:
        bundle = (await client.get(nxt)).json()
        pages.append(ids(bundle))
    assert [i for p in pages for i in p] == ["s6", "s3", "s0", "s4", "s1", "s5", "s2"]
    prev = link(bundle, "previous")
    assert prev is not None
    assert ids((await client.get(prev)).json()) == ["s4", "s1", "s5"]
    self_query = dict(parse_qsl(urlsplit(link(bundle, "self") or "").query))
    assert self_query["_sort"] == "family,-birthdate" and self_query["_count"] == "3"


async def test_paging_stays_correct_under_concurrent_writes(client: httpx.AsyncClient) -> None:
    for i in range(10):
        await create(client, {"resourceType": "Patient", "id": f"pg{i:02d}", "gender": "other"})
    bundle = await search(client, "Patient?gender=other&_count=4")
    collected = ids(bundle)
    writes = 0
    while (nxt := link(bundle, "next")) is not None:
        # other clients write between pages: a new match, an update to a seen one, a delete of a seen one
        await create(client, {"resourceType": "Patient", "id": f"new{writes}", "gender": "other"})
        await create(
            client, {"resourceType": "Patient", "id": collected[0], "gender": "other", "active": True}
        )
        writes += 1
        bundle = (await client.get(nxt)).json()
        collected += ids(bundle)
    assert len(collected) == len(set(collected)), "no duplicates"
    assert {f"pg{i:02d}" for i in range(10)} <= set(collected), "no gaps"


async def test_strict_and_lenient_handling(client: httpx.AsyncClient, people: dict[str, str]) -> None:
    r = await client.get(f"{BASE}/Patient?nonsense=1", headers={"Prefer": "handling=strict"})
    assert r.status_code == 400 and r.json()["resourceType"] == "OperationOutcome"
    assert "nonsense" in r.json()["issue"][0]["diagnostics"]
    r = await client.get(f"{BASE}/Patient?birthdate=notadate", headers={"Prefer": "handling=strict"})
    assert r.status_code == 400
    r = await client.get(f"{BASE}/Patient?gender:bogus=male", headers={"Prefer": "handling=strict"})
    assert r.status_code == 400
    bundle = await search(client, "Patient?nonsense=1&gender=female", Prefer="handling=lenient")
    assert ids(bundle) == [people["muller"]]
    self_url = link(bundle, "self") or ""
    assert "nonsense" not in self_url and "gender=female" in self_url
    assert any(e["search"]["mode"] == "outcome" for e in bundle["entry"])


async def test_summary_elements_total(client: httpx.AsyncClient, people: dict[str, str]) -> None:
    bundle = await search(client, "Patient?_summary=count")
    assert bundle["total"] == 3 and "entry" not in bundle
    bundle = await search(client, "Patient?_elements=gender&_id=" + people["zhang"])
    resource = bundle["entry"][0]["resource"]
    assert resource["gender"] == "male" and "name" not in resource and "birthDate" not in resource
    assert any(t.get("code") == "SUBSETTED" for t in resource["meta"]["tag"])
    bundle = await search(client, "Patient?_summary=true&_id=" + people["zhang"])
    assert "telecom" in bundle["entry"][0]["resource"] and "text" not in bundle["entry"][0]["resource"]
    bundle = await search(client, "Patient?gender=male&_count=0")
    assert bundle["total"] == 2 and bundle.get("entry", []) == []
    bundle = await search(client, "Patient?_total=accurate&_count=1")
    assert bundle["total"] == 3 and len(bundle["entry"]) == 1


async def test_post_search_and_system_search(client: httpx.AsyncClient, people: dict[str, str]) -> None:
    r = await client.post(
        f"{BASE}/Patient/_search",
        content="family=张",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert r.status_code == 200 and ids(r.json()) == [people["zhang"]]
    await create(client, {"resourceType": "Practitioner", "name": [{"family": "张"}]})
    bundle = await search(client, "?_type=Patient,Practitioner&name=张")
    assert sorted(e["resource"]["resourceType"] for e in bundle["entry"]) == ["Patient", "Practitioner"]
    assert all(
        e["fullUrl"].endswith(f"{e['resource']['resourceType']}/{e['resource']['id']}")
        for e in bundle["entry"]
    )


async def test_meta_params_uri_number_and_of_type(client: httpx.AsyncClient) -> None:
    tagged = await create(
        client,
        {
            "resourceType": "Patient",
            "meta": {
                "tag": [{"system": "urn:yilian:tier", "code": "village"}],
                "security": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
                ],
                "profile": ["http://yilian.example/StructureDefinition/cn-patient"],
                "source": "urn:yilian:clinic:07",
            },
            "identifier": [
                {
                    "type": {
                        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}]
                    },
                    "system": "urn:cn-id",
                    "value": "110101199003070000",
                }
            ],
        },
    )
    await create(
        client,
        {"resourceType": "Patient", "meta": {"tag": [{"system": "urn:yilian:tier", "code": "county"}]}},
    )
    assert ids(await search(client, "Patient?_tag=urn:yilian:tier|village")) == [tagged]
    assert ids(await search(client, "Patient?_security=R")) == [tagged]
    assert ids(
        await search(client, "Patient?_profile=http://yilian.example/StructureDefinition/cn-patient")
    ) == [tagged]
    assert ids(await search(client, "Patient?_profile:below=http://yilian.example/")) == [tagged]
    assert ids(await search(client, "Patient?_source=urn:yilian:clinic:07")) == [tagged]
    of_type = "Patient?identifier:of-type=http://terminology.hl7.org/CodeSystem/v2-0203|NI|110101199003070000"
    assert ids(await search(client, of_type)) == [tagged]
    assert ids(await search(client, of_type.replace("|NI|", "|MR|"))) == []
    vs = await create(
        client,
        {"resourceType": "ValueSet", "status": "active", "url": "http://yilian.example/fhir/ValueSet/tiers"},
    )
    assert ids(await search(client, "ValueSet?url=http://yilian.example/fhir/ValueSet/tiers")) == [vs]
    assert ids(await search(client, "ValueSet?url:below=http://yilian.example/fhir")) == [vs]
    assert ids(await search(client, "ValueSet?url:above=http://yilian.example/fhir/ValueSet/tiers/v2")) == [
        vs
    ]
    assert ids(await search(client, "ValueSet?url=http://yilian.example/fhir")) == []
    risk = await create(
        client,
        {
            "resourceType": "RiskAssessment",
            "status": "final",
            "subject": {"reference": f"Patient/{tagged}"},
            "prediction": [{"probabilityDecimal": 0.25}],
        },
    )
    assert ids(await search(client, "RiskAssessment?probability=0.25")) == [risk]
    assert ids(await search(client, "RiskAssessment?probability=gt0.2")) == [risk]
    assert ids(await search(client, "RiskAssessment?probability=lt0.2")) == []
    assert ids(await search(client, "RiskAssessment?probability=0.3")) == [risk]  # 0.3 means [0.25, 0.35)
    assert ids(await search(client, "RiskAssessment?probability=0.4")) == []


async def test_last_updated(client: httpx.AsyncClient, people: dict[str, str]) -> None:
    r = await client.get(f"{BASE}/Patient/{people['zhang']}")
    stamp = r.json()["meta"]["lastUpdated"]
    everyone = sorted(people.values())
    assert sorted(ids(await search(client, "Patient?_lastUpdated=gt2000-01-01"))) == everyone
    assert ids(await search(client, "Patient?_lastUpdated=lt2000-01-01")) == []
    assert people["zhang"] in ids(await search(client, f"Patient?_lastUpdated={stamp[:10]}"))
    assert people["zhang"] in ids(await search(client, f"Patient?_lastUpdated=le{stamp}"))
    assert people["zhang"] not in ids(await search(client, f"Patient?_lastUpdated=gt{stamp}"))
    assert people["zhang"] in ids(await search(client, f"Patient?_lastUpdated=ge{stamp}&_sort=-_lastUpdated"))
