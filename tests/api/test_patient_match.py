"""Patient/$match over HTTP: persons, best first, each with a score and a match grade; a resident ID is
the only certain match, and name + birth date alone are only possible."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx

from terminology import cn_resident_id
from tests.records import masters

RESIDENT = cn_resident_id.SYSTEM
LI = cn_resident_id.make("411302", dt.date(1961, 3, 14), 122)
OTHER = cn_resident_id.make("411302", dt.date(1961, 3, 14), 344)
GRADE = "http://hl7.org/fhir/StructureDefinition/match-grade"


def patient(member: str, mrn: str, *, resident_id: str | None = None, **elements: Any) -> dict[str, Any]:
    idents = [{"system": f"urn:yilian:member:{member}:patient-id", "value": mrn}]
    if resident_id:
        idents.append({"system": RESIDENT, "value": resident_id})
    return {"resourceType": "Patient", "identifier": idents, **elements}


async def create(client: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    r = await client.post("/fhir/Patient", json=resource)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def match(
    client: httpx.AsyncClient, probe: dict[str, Any], **options: Any
) -> list[tuple[str, str, float]]:
    params: list[dict[str, Any]] = [{"name": "resource", "resource": probe}]
    if "only_certain" in options:
        params.append({"name": "onlyCertainMatches", "valueBoolean": options["only_certain"]})
    if "count" in options:
        params.append({"name": "count", "valueInteger": options["count"]})
    r = await client.post("/fhir/Patient/$match", json={"resourceType": "Parameters", "parameter": params})
    assert r.status_code == 200, r.text
    bundle = r.json()
    assert bundle["type"] == "searchset" and bundle["total"] == len(bundle.get("entry", []))
    out = []
    for e in bundle.get("entry", []):
        (grade,) = [x["valueCode"] for x in e["search"]["extension"] if x["url"] == GRADE]
        assert e["search"]["mode"] == "match" and e["fullUrl"].endswith(f"/Patient/{e['resource']['id']}")
        out.append((e["resource"]["id"], grade, e["search"]["score"]))
    return out


LI_DETAILS = {
    "name": [{"text": "李秀兰"}],
    "gender": "female",
    "birthDate": "1961-03-14",
    "telecom": [{"system": "phone", "value": "13800001111"}],
    "address": [{"text": "河南省南阳市卧龙区车站路12号"}],
}


async def test_name_and_birth_date_alone_are_possible_not_certain(client: httpx.AsyncClient) -> None:
    li = await create(client, patient("XYRMYY", "C-1", **LI_DETAILS))
    await create(client, patient("XYRMYY", "C-2", name=[{"text": "王伟"}], birthDate="1961-03-14"))
    found = await match(
        client, {"resourceType": "Patient", "name": [{"text": "李秀兰"}], "birthDate": "1961-03-14"}
    )
    assert [(pid, grade) for pid, grade, _ in found] == [(li, "possible")]
    assert found[0][2] < 1.0
    assert await match(client, {"resourceType": "Patient", **LI_DETAILS}, only_certain=True) == []


async def test_spacing_script_and_pinyin_variants_of_a_name_match(client: httpx.AsyncClient) -> None:
    li = await create(client, patient("XYRMYY", "C-1", **LI_DETAILS))
    for name in (
        {"text": "李 秀兰"},
        {"family": "李", "given": ["秀兰"]},
        {"text": "Li Xiulan"},
        {"text": "ＬＩ ＸＩＵＬＡＮ"},
    ):
        probe = {**LI_DETAILS, "name": [name], "resourceType": "Patient"}
        found = await match(client, probe)
        assert [(pid, grade) for pid, grade, _ in found] == [(li, "probable")], name
    # A one-character difference (兰 / 莲) still scores, lower.
    near = await match(client, {**LI_DETAILS, "name": [{"text": "李秀莲"}], "resourceType": "Patient"})
    assert near and near[0][0] == li and near[0][2] < 0.99


async def test_a_resident_id_is_certain_and_a_linked_person_is_answered_by_the_master(
    client: httpx.AsyncClient,
) -> None:
    await create(client, patient("XYRMYY", "C-1", resident_id=LI, **LI_DETAILS))
    await create(client, patient("DLZWSY", "T-1", resident_id=LI, name=[{"text": "李秀兰"}]))
    (master,) = await masters(client)
    probe = {"resourceType": "Patient", "identifier": [{"system": RESIDENT, "value": LI}]}
    assert [(pid, grade, score) for pid, grade, score in await match(client, probe, only_certain=True)] == [
        (master["id"], "certain", 1.0)
    ]
    # Same name and birth date but another valid resident ID: certainly not her, so not listed.
    twin = {**LI_DETAILS, "resourceType": "Patient", "identifier": [{"system": RESIDENT, "value": OTHER}]}
    assert await match(client, twin) == []


async def test_count_and_order(client: httpx.AsyncClient) -> None:
    best = await create(client, patient("XYRMYY", "C-1", **LI_DETAILS))
    other = await create(client, patient("DLZWSY", "T-1", name=[{"text": "李秀兰"}], birthDate="1961-03-14"))
    found = await match(client, {"resourceType": "Patient", **LI_DETAILS})
    assert [pid for pid, _, _ in found] == [best, other]
    assert found[0][2] > found[1][2]
    assert [pid for pid, _, _ in await match(client, {"resourceType": "Patient", **LI_DETAILS}, count=1)] == [
        best
    ]


async def test_bad_requests_name_the_parameter(client: httpx.AsyncClient) -> None:
    cases = [
        ({"resourceType": "Patient"}, "Parameters"),
        ({"resourceType": "Parameters", "parameter": []}, "Parameters.parameter"),
        (
            {
                "resourceType": "Parameters",
                "parameter": [{"name": "resource", "resource": {"resourceType": "Observation"}}],
            },
            "Parameters.parameter[0].resource",
        ),
        (
            {
                "resourceType": "Parameters",
                "parameter": [
                    {"name": "resource", "resource": {"resourceType": "Patient"}},
                    {"name": "count", "valueInteger": 0},
                ],
            },
            "Parameters.parameter[1].valueInteger",
        ),
    ]
    for body, where in cases:
        r = await client.post("/fhir/Patient/$match", json=body)
        assert r.status_code == 400, r.text
        assert r.json()["issue"][0]["expression"] == [where]
    # A malformed probe is not an error of the server: nothing matches it.
    r = await client.post(
        "/fhir/Patient/$match",
        json={
            "resourceType": "Parameters",
            "parameter": [
                {
                    "name": "resource",
                    "resource": {
                        "resourceType": "Patient",
                        "name": 5,
                        "telecom": 1.5,
                        "identifier": "x",
                        "birthDate": "1961-13-45",
                    },
                }
            ],
        },
    )
    assert r.status_code == 200, r.text


async def test_the_capability_statement_names_the_operation(client: httpx.AsyncClient) -> None:
    cs = (await client.get("/fhir/metadata")).json()
    (patient_rest,) = [r for r in cs["rest"][0]["resource"] if r["type"] == "Patient"]
    assert {
        "name": "match",
        "definition": "http://hl7.org/fhir/OperationDefinition/Patient-match",
    } in patient_rest["operation"]


async def test_without_a_birth_date_a_phone_or_the_name_finds_the_person(client: httpx.AsyncClient) -> None:
    li = await create(client, patient("XYRMYY", "C-1", **LI_DETAILS))
    by_phone = {
        "resourceType": "Patient",
        "name": [{"text": "李秀兰"}],
        "telecom": [{"value": "+86 138-0000-1111"}],
    }
    assert [(pid, grade) for pid, grade, _ in await match(client, by_phone)] == [(li, "possible")]
    # Neither phone nor birth date: the name block (the last resort) finds her; gender and address
    # agreeing make her possible, the name alone does not.
    by_name = {
        "resourceType": "Patient",
        "name": [{"text": "李 秀兰"}],
        "gender": "female",
        "address": LI_DETAILS["address"],
    }
    assert [(pid, grade) for pid, grade, _ in await match(client, by_name)] == [(li, "possible")]
    assert await match(client, {"resourceType": "Patient", "name": [{"text": "李秀兰"}]}) == []
