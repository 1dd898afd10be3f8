"""`Patient/$merge` over HTTP (R5's shape): the survivor keeps everything and gains the duplicate's
identifiers, every reference moves to it in one write, and later writes naming the old MRN land on it."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.test_master_patient import LI_XIULAN, create, master_ref, member_patient, read, seealso
from tests.records import masters, search

COUNTY = "urn:yilian:member:XYRMYY:patient-id"


def merge_params(source: str | None = None, target: str | None = None, **more: Any) -> dict[str, Any]:
    params: list[dict[str, Any]] = []
    if source is not None:
        params.append({"name": "source-patient", "valueReference": {"reference": f"Patient/{source}"}})
    if target is not None:
        params.append({"name": "target-patient", "valueReference": {"reference": f"Patient/{target}"}})
    for name, value in more.items():
        params.append({"name": name.replace("_", "-"), **value})
    return {"resourceType": "Parameters", "parameter": params}


def output(answer: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [p["resource"] for p in answer["parameter"] if p["name"] == name]
    return dict(found)


async def record_of(client: httpx.AsyncClient, patient: str) -> dict[str, str]:
    """A small clinical record for `patient`: one resource of each kind a merge must move."""
    subject = {"reference": f"Patient/{patient}"}
    ids = {}
    for resource in (
        {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": subject},
        {"resourceType": "ServiceRequest", "status": "active", "intent": "order", "subject": subject},
        {"resourceType": "DiagnosticReport", "status": "final", "code": {"text": "CBC"}, "subject": subject},
        {"resourceType": "Observation", "status": "final", "code": {"text": "Hb"}, "subject": subject},
        {"resourceType": "ImagingStudy", "status": "available", "subject": subject},
        {"resourceType": "Task", "status": "requested", "intent": "order", "for": subject},
    ):
        ids[resource["resourceType"]] = await create(client, resource)
    return ids


async def test_merge_moves_the_record_to_the_survivor(client: httpx.AsyncClient) -> None:
    survivor = await create(
        client,
        member_patient("XYRMYY", "C-1", resident_id=LI_XIULAN, name=[{"text": "李秀兰"}], gender="female"),
    )
    duplicate = await create(
        client,
        member_patient(
            "XYRMYY", "C-2", name=[{"text": "李秀兰"}], telecom=[{"system": "phone", "value": "13800001111"}]
        ),
    )
    moved = await record_of(client, duplicate)
    stays = await record_of(client, survivor)
    before = await search(client, "Provenance")

    r = await client.post("/fhir/Patient/$merge", json=merge_params(duplicate, survivor))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert output(answer, "input") == merge_params(duplicate, survivor)
    assert "resources re-pointed to it: 6" in output(answer, "outcome")["issue"][0]["diagnostics"]
    result = output(answer, "result")
    assert result == await read(client, f"Patient/{survivor}")

    # The survivor keeps what it had, gains the duplicate's MRN as old, and says what it replaces.
    assert result["gender"] == "female" and "telecom" not in result
    assert [(i["value"], i.get("use")) for i in result["identifier"]] == [
        ("C-1", None),
        (LI_XIULAN, None),
        ("C-2", "old"),
    ]
    assert {"other": {"reference": f"Patient/{duplicate}"}, "type": "replaces"} in result["link"]
    old = await read(client, f"Patient/{duplicate}")
    assert old["active"] is False
    assert old["link"] == [{"other": {"reference": f"Patient/{survivor}"}, "type": "replaced-by"}]
    assert old["telecom"] == [{"system": "phone", "value": "13800001111"}]  # kept, not emptied

    for rtype, rid in (*moved.items(), *stays.items()):
        res = await read(client, f"{rtype}/{rid}")
        assert res["for" if rtype == "Task" else "subject"] == {"reference": f"Patient/{survivor}"}
    assert (await read(client, f"DiagnosticReport/{stays['DiagnosticReport']}"))["meta"]["versionId"] == "1"

    # One Provenance names the merge; the ones written before it still say what they said.
    (prov,) = [p for p in await search(client, "Provenance") if p["id"] not in {b["id"] for b in before}]
    assert prov["activity"]["coding"][0]["code"] == "merge"
    targets = {t["reference"] for t in prov["target"]}
    assert {f"{t}/{i}" for t, i in moved.items()} <= targets
    assert f"Patient/{survivor}/_history/{result['meta']['versionId']}" in targets
    everything = await client.get(f"/fhir/Patient/{survivor}/$everything")
    types = [e["resource"]["resourceType"] for e in everything.json()["entry"]]
    assert types.count("DiagnosticReport") == 2 and types.count("Patient") == 2


async def test_later_writes_naming_the_old_mrn_land_on_the_survivor(client: httpx.AsyncClient) -> None:
    survivor = await create(client, member_patient("XYRMYY", "C-1", name=[{"text": "王五"}]))
    duplicate = await create(client, member_patient("XYRMYY", "C-2", name=[{"text": "王五"}]))
    assert (
        await client.post("/fhir/Patient/$merge", json=merge_params(duplicate, survivor))
    ).status_code == 200

    # A conditional reference (in a transaction) and an If-None-Exist naming the old MRN both mean it.
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "Hb"},
        "subject": {"reference": f"Patient?identifier={COUNTY}|C-2"},
    }
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": observation, "request": {"method": "POST", "url": "Observation"}}],
    }
    r = await client.post("/fhir", json=bundle, headers={"Prefer": "return=representation"})
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["resource"]["subject"] == {"reference": f"Patient/{survivor}"}
    r = await client.post(
        "/fhir/Patient",
        json=member_patient("XYRMYY", "C-2"),
        headers={"If-None-Exist": f"identifier={COUNTY}|C-2"},
    )
    assert r.status_code == 200 and r.json()["id"] == survivor, r.text

    # A conditional delete naming it is ambiguous (two records carry it) and removes nothing.
    r = await client.delete("/fhir/Patient", params={"identifier": f"{COUNTY}|C-2"})
    assert r.status_code == 412, r.text
    assert (await client.get(f"/fhir/Patient/{survivor}")).status_code == 200


async def test_preview_changes_nothing(client: httpx.AsyncClient) -> None:
    survivor = await create(client, member_patient("XYRMYY", "C-1"))
    duplicate = await create(client, member_patient("XYRMYY", "C-2"))
    moved = await record_of(client, duplicate)
    r = await client.post(
        "/fhir/Patient/$merge", json=merge_params(duplicate, survivor, preview={"valueBoolean": True})
    )
    assert r.status_code == 200, r.text
    assert "would be merged" in output(r.json(), "outcome")["issue"][0]["diagnostics"]
    assert {"other": {"reference": f"Patient/{duplicate}"}, "type": "replaces"} in output(r.json(), "result")[
        "link"
    ]
    assert "link" not in await read(client, f"Patient/{survivor}")
    assert (await read(client, f"Patient/{duplicate}")).get("active") is None
    report = await read(client, f"DiagnosticReport/{moved['DiagnosticReport']}")
    assert report["subject"] == {"reference": f"Patient/{duplicate}"}
    assert await search(client, "Provenance") == []


async def test_identifiers_name_the_patients_and_result_patient_replaces_the_target(
    client: httpx.AsyncClient,
) -> None:
    survivor = await create(client, member_patient("XYRMYY", "C-1", name=[{"text": "王五"}]))
    duplicate = await create(client, member_patient("XYRMYY", "C-2"))
    result = member_patient("XYRMYY", "C-1", name=[{"text": "王伍"}], gender="male")
    result["id"] = survivor
    params = merge_params(
        source_patient_identifier={"valueIdentifier": {"system": COUNTY, "value": "C-2"}},
        target_patient_identifier={"valueIdentifier": {"system": COUNTY, "value": "C-1"}},
        result_patient={"resource": result},
    )
    r = await client.post("/fhir/Patient/$merge", json=params)
    assert r.status_code == 200, r.text
    after = await read(client, f"Patient/{survivor}")
    assert after["name"] == [{"text": "王伍"}] and after["gender"] == "male"
    assert [(i["value"], i.get("use")) for i in after["identifier"]] == [("C-1", None), ("C-2", "old")]
    assert (await read(client, f"Patient/{duplicate}"))["active"] is False
    # Replayed (an HIS resending the merge): the same records, nothing new to move, no error.
    r = await client.post("/fhir/Patient/$merge", json=params)
    assert r.status_code == 200, r.text


async def test_a_merge_puts_both_records_in_the_persons_master(client: httpx.AsyncClient) -> None:
    county = await create(client, member_patient("XYRMYY", "C-1", resident_id=LI_XIULAN))
    township = await create(client, member_patient("DLZWSY", "T-1", resident_id=LI_XIULAN))
    duplicate = await create(client, member_patient("DLZWSY", "T-2"))  # registered without the number
    (master,) = await masters(client)
    r = await client.post("/fhir/Patient/$merge", json=merge_params(duplicate, township))
    assert r.status_code == 200, r.text
    (master,) = await masters(client)
    assert seealso(master) == {f"Patient/{county}", f"Patient/{township}", f"Patient/{duplicate}"}
    assert master_ref(await read(client, f"Patient/{duplicate}")) == f"Patient/{master['id']}"
    # The survivor had no master, the duplicate had: the survivor joins the duplicate's person.
    lone = await create(client, member_patient("HSZWSY", "H-1"))
    r = await client.post("/fhir/Patient/$merge", json=merge_params(county, lone))
    assert r.status_code == 200, r.text
    (master,) = await masters(client)
    assert f"Patient/{lone}" in seealso(master)


async def test_bad_merges_are_refused_clearly(client: httpx.AsyncClient) -> None:
    a = await create(client, member_patient("XYRMYY", "C-1", resident_id=LI_XIULAN))
    b = await create(client, member_patient("DLZWSY", "T-1", resident_id=LI_XIULAN))
    c = await create(client, member_patient("XYRMYY", "C-3"))
    (master,) = await masters(client)

    async def refused(params: dict[str, Any], status: int) -> dict[str, Any]:
        r = await client.post("/fhir/Patient/$merge", json=params)
        assert r.status_code == status, r.text
        return dict(r.json()["issue"][0])

    assert (await refused(merge_params(a, a), 400))["diagnostics"].endswith("are the same record")
    assert (await refused(merge_params(a), 400))["diagnostics"].startswith("name the target Patient")
    issue = await refused(merge_params(master["id"], c), 422)
    assert issue["code"] == "business-rule" and issue["expression"] == ["Parameters.source-patient"]
    assert (await refused(merge_params("nobody", c), 404))["code"] == "not-found"
    issue = await refused(
        merge_params(
            target=c, source_patient_identifier={"valueIdentifier": {"system": COUNTY, "value": "C-404"}}
        ),
        422,
    )
    assert issue["expression"] == ["Parameters.source-patient-identifier"]
    assert "not known to the hub" in issue["diagnostics"]
    bad = merge_params(c, a)
    bad["parameter"][0]["valueReference"] = {"reference": "Observation/1"}
    assert (await refused(bad, 400))["expression"] == ["Parameters.parameter[0].valueReference"]
    assert (await client.post("/fhir/Patient/$merge", json=merge_params(b, a))).status_code == 200
    issue = await refused(merge_params(b, c), 422)
    assert "already merged into" in issue["diagnostics"]
    issue = await refused(merge_params(c, b), 422)
    assert "was itself merged into" in issue["diagnostics"]


async def test_a_transaction_can_update_a_record_and_merge_into_it(client: httpx.AsyncClient) -> None:
    duplicate = await create(client, member_patient("XYRMYY", "C-2"))
    moved = await record_of(client, duplicate)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "request": {"method": "POST", "url": "Patient/$merge"},
                "resource": {
                    "resourceType": "Parameters",
                    "parameter": [
                        {"name": "source-patient", "valueReference": {"reference": f"Patient/{duplicate}"}},
                        {"name": "target-patient", "valueReference": {"reference": "urn:uuid:survivor"}},
                    ],
                },
            },
            {
                "fullUrl": "urn:uuid:survivor",
                "resource": member_patient("XYRMYY", "C-1"),
                "request": {"method": "PUT", "url": f"Patient?identifier={COUNTY}|C-1"},
            },
        ],
    }
    r = await client.post("/fhir", json=bundle, headers={"Prefer": "return=representation"})
    assert r.status_code == 200, r.text
    merge_entry, survivor_entry = r.json()["entry"]
    assert merge_entry["response"]["status"] == "200 OK"
    survivor = survivor_entry["resource"]["id"]
    assert output(merge_entry["resource"], "result")["id"] == survivor
    report = await read(client, f"DiagnosticReport/{moved['DiagnosticReport']}")
    assert report["subject"] == {"reference": f"Patient/{survivor}"}

    bad = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"request": {"method": "POST", "url": "Patient/$everything"}, "resource": {}}],
    }
    r = await client.post("/fhir", json=bad)
    assert r.status_code == 400 and "only POST Patient/$merge" in r.text
