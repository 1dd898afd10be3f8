"""The consortium record over HTTP: a person's member records are linked by one hub-owned master Patient
(certain match on a valid 居民身份证), in the same write; masters are the hub's alone."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import httpx

from fhir_server.model.person import MASTER_TAG_CODE, MASTER_TAG_SYSTEM, is_master
from terminology import cn_resident_id
from tests.records import masters, search

RESIDENT = cn_resident_id.SYSTEM
LI_XIULAN = cn_resident_id.make("411302", dt.date(1961, 3, 14), 122)
WANG = cn_resident_id.make("411302", dt.date(1975, 8, 2), 311)


def member_patient(
    member: str, mrn: str, *, resident_id: str | None = None, **elements: Any
) -> dict[str, Any]:
    idents = [{"system": f"urn:yilian:member:{member}:patient-id", "value": mrn}]
    if resident_id:
        idents.append({"system": RESIDENT, "value": resident_id})
    return {"resourceType": "Patient", "identifier": idents, **elements}


async def create(client: httpx.AsyncClient, resource: dict[str, Any]) -> str:
    r = await client.post(f"/fhir/{resource['resourceType']}", json=resource)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def read(client: httpx.AsyncClient, ref: str) -> dict[str, Any]:
    r = await client.get(f"/fhir/{ref}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def master_ref(source: dict[str, Any]) -> str | None:
    refs = [lk["other"]["reference"] for lk in source.get("link", []) if lk["type"] == "refer"]
    assert len(refs) <= 1, source
    return refs[0] if refs else None


def seealso(master: dict[str, Any]) -> set[str]:
    return {lk["other"]["reference"] for lk in master["link"] if lk["type"] == "seealso"}


async def test_two_members_with_one_resident_id_get_one_master(client: httpx.AsyncClient) -> None:
    county = await create(
        client,
        member_patient(
            "XYRMYY",
            "C-1001",
            resident_id=LI_XIULAN,
            name=[{"text": "李秀兰"}],
            gender="female",
            birthDate="1961-03-14",
            telecom=[{"system": "phone", "value": "13800001111"}],
        ),
    )
    assert await masters(client) == []  # one member's record needs no master
    assert [
        p["id"]
        for p in await search(client, "Patient", identifier="urn:yilian:member:XYRMYY:patient-id|C-1001")
    ] == [county]

    # The township registers her with its own MRN, a lower-case check character and fewer details.
    township = await create(
        client,
        member_patient("DLZWSY", "T-77", resident_id=LI_XIULAN.lower(), name=[{"text": "李秀兰"}]),
    )
    (master,) = await masters(client)
    assert is_master(master)
    assert seealso(master) == {f"Patient/{county}", f"Patient/{township}"}
    for source_id in (county, township):
        assert master_ref(await read(client, f"Patient/{source_id}")) == f"Patient/{master['id']}"
    # Survivorship: the union of identifiers (the resident ID once, first), and what any member knows.
    assert [(i["system"], i["value"]) for i in master["identifier"]] == [
        (RESIDENT, LI_XIULAN),
        ("urn:yilian:member:DLZWSY:patient-id", "T-77"),
        ("urn:yilian:member:XYRMYY:patient-id", "C-1001"),
    ]
    assert master["birthDate"] == "1961-03-14" and master["gender"] == "female"
    assert master["telecom"] == [{"system": "phone", "value": "13800001111"}]
    # The hub says it linked them.
    (prov,) = await search(client, "Provenance", target=f"Patient/{master['id']}")
    assert prov["agent"][0]["who"]["display"].startswith("YiLian hub")
    assert prov["entity"] == [{"role": "source", "what": {"reference": f"Patient/{township}"}}]

    # A member's identifier search finds its record and the master that carries the number too.
    found = await search(client, "Patient", identifier="urn:yilian:member:DLZWSY:patient-id|T-77")
    assert sorted(p["id"] for p in found) == sorted([township, master["id"]])
    # Each member's conditional update still reaches its own record (never the master).
    r = await client.put(
        "/fhir/Patient",
        params={"identifier": "urn:yilian:member:DLZWSY:patient-id|T-77"},
        json=member_patient(
            "DLZWSY",
            "T-77",
            resident_id=LI_XIULAN,
            name=[{"text": "李秀兰"}],
            telecom=[{"system": "phone", "value": "13900002222"}],
        ),
    )
    assert r.status_code == 200, r.text
    assert r.json()["id"] == township and master_ref(r.json()) == f"Patient/{master['id']}"
    (master,) = await masters(client)
    assert master["telecom"] == [{"system": "phone", "value": "13900002222"}]  # the newest member's phone
    assert master["birthDate"] == "1961-03-14"  # the township's sparse record does not blank it
    assert len(await search(client, "Provenance", target=f"Patient/{master['id']}")) == 1  # same sources


async def test_a_third_record_joins_and_a_corrected_number_moves_it(client: httpx.AsyncClient) -> None:
    a = await create(
        client, member_patient("XYRMYY", "C-1", resident_id=LI_XIULAN, name=[{"text": "李秀兰"}])
    )
    b = await create(client, member_patient("DLZWSY", "T-1", resident_id=LI_XIULAN))
    c = await create(client, member_patient("HSZWSY", "H-1", resident_id=LI_XIULAN))
    (master,) = await masters(client)
    assert seealso(master) == {f"Patient/{a}", f"Patient/{b}", f"Patient/{c}"}

    # The village clinic mistyped: its record is another person's. Corrected, it leaves her master.
    moved = member_patient("HSZWSY", "H-1", resident_id=WANG)
    moved["id"] = c
    r = await client.put(f"/fhir/Patient/{c}", json=moved)
    assert r.status_code == 200, r.text
    assert master_ref(r.json()) is None  # nobody else carries WANG's number yet
    (master,) = await masters(client)
    assert seealso(master) == {f"Patient/{a}", f"Patient/{b}"}
    assert LI_XIULAN in {i["value"] for i in master["identifier"]}
    assert "H-1" not in {i["value"] for i in master["identifier"]}

    # A deleted source leaves its master too; the master keeps the person's remaining record.
    assert (await client.delete(f"/fhir/Patient/{b}")).status_code in (200, 204)
    (master,) = await masters(client)
    assert seealso(master) == {f"Patient/{a}"}
    assert "T-1" not in {i["value"] for i in master["identifier"]}


async def test_masters_are_the_hubs_alone(client: httpx.AsyncClient) -> None:
    await create(client, member_patient("XYRMYY", "C-1", resident_id=LI_XIULAN))
    await create(client, member_patient("DLZWSY", "T-1", resident_id=LI_XIULAN))
    (master,) = await masters(client)
    r = await client.put(f"/fhir/Patient/{master['id']}", json={**master, "gender": "male"})
    assert r.status_code == 403, r.text
    assert r.json()["issue"][0]["code"] == "forbidden"
    assert r.json()["issue"][0]["expression"] == ["Patient.meta.tag"]
    assert (await client.delete(f"/fhir/Patient/{master['id']}")).status_code == 403
    forged = member_patient("XX", "1", meta={"tag": [{"system": MASTER_TAG_SYSTEM, "code": MASTER_TAG_CODE}]})
    assert (await client.post("/fhir/Patient", json=forged)).status_code == 403
    (after,) = await masters(client)
    assert after["meta"]["versionId"] == master["meta"]["versionId"]


async def test_members_registering_one_person_at_once_make_one_master(client: httpx.AsyncClient) -> None:
    members = [f"M{i:02d}" for i in range(12)]
    answers = await asyncio.gather(
        *(client.post("/fhir/Patient", json=member_patient(m, "P-1", resident_id=LI_XIULAN)) for m in members)
    )
    assert [r.status_code for r in answers] == [201] * len(members)
    (master,) = await masters(client)
    assert seealso(master) == {f"Patient/{r.json()['id']}" for r in answers}
    for r in answers:
        assert master_ref(await read(client, f"Patient/{r.json()['id']}")) == f"Patient/{master['id']}"


async def test_a_transaction_registering_two_members_links_them(client: httpx.AsyncClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:0000000{i}-0000-4000-8000-000000000000",
                "resource": member_patient(member, "X-9", resident_id=WANG),
                "request": {
                    "method": "PUT",
                    "url": f"Patient?identifier=urn:yilian:member:{member}:patient-id|X-9",
                },
            }
            for i, member in enumerate(("XYRMYY", "DLZWSY"))
        ],
    }
    r = await client.post("/fhir", json=bundle)
    assert r.status_code == 200, r.text
    (master,) = await masters(client)
    assert len(seealso(master)) == 2


async def test_merge_links_survive_an_update_that_omits_them(client: httpx.AsyncClient) -> None:
    survivor = await create(client, member_patient("XYRMYY", "C-1", name=[{"text": "王五"}]))
    old = member_patient(
        "XYRMYY",
        "C-2",
        active=False,
        link=[{"other": {"reference": f"Patient/{survivor}"}, "type": "replaced-by"}],
    )
    old_id = await create(client, old)
    # The HIS, not knowing of the merge, re-sends the old record whole (as an A08 would).
    resend = member_patient("XYRMYY", "C-2", active=True, name=[{"text": "王五"}])
    resend["id"] = old_id
    r = await client.put(f"/fhir/Patient/{old_id}", json=resend)
    assert r.status_code == 200, r.text
    assert r.json()["link"] == [{"other": {"reference": f"Patient/{survivor}"}, "type": "replaced-by"}]
    assert r.json()["active"] is False
    assert r.json()["name"] == [{"text": "王五"}]


async def test_everything_from_one_member_shows_the_others_results(client: httpx.AsyncClient) -> None:
    county = await create(client, member_patient("XYRMYY", "C-1", resident_id=LI_XIULAN))
    ct = await create(
        client,
        {
            "resourceType": "ImagingStudy",
            "status": "available",
            "subject": {"reference": f"Patient/{county}"},
        },
    )
    lab = await create(
        client,
        {
            "resourceType": "DiagnosticReport",
            "status": "final",
            "code": {"text": "血常规"},
            "subject": {"reference": f"Patient/{county}"},
        },
    )
    township = await create(client, member_patient("DLZWSY", "T-1", resident_id=LI_XIULAN))
    stranger = await create(client, member_patient("DLZWSY", "T-2", resident_id=WANG))
    await create(
        client,
        {
            "resourceType": "DiagnosticReport",
            "status": "final",
            "code": {"text": "尿常规"},
            "subject": {"reference": f"Patient/{stranger}"},
        },
    )
    r = await client.get(f"/fhir/Patient/{township}/$everything")
    assert r.status_code == 200, r.text
    got = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in r.json()["entry"]}
    assert {f"ImagingStudy/{ct}", f"DiagnosticReport/{lab}", f"Patient/{county}"} <= got
    assert f"Patient/{stranger}" not in got


def reference_params(**refs: str) -> dict[str, Any]:
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": name.replace("_", "-"), "valueReference": {"reference": ref}}
            for name, ref in refs.items()
        ],
    }


async def test_a_wrong_link_split_stays_split_and_a_link_undoes_it(
    hub: Any, client: httpx.AsyncClient
) -> None:
    county = await create(
        client, member_patient("XYRMYY", "C-1", resident_id=LI_XIULAN, name=[{"text": "李秀兰"}])
    )
    # The township keyed in her number for another woman; an operator splits the wrong link.
    township_body = member_patient("DLZWSY", "T-1", resident_id=LI_XIULAN, name=[{"text": "李秀芬"}])
    township = await create(client, township_body)
    (master,) = await masters(client)
    r = await client.post(
        "/fhir/Patient/$mpi-split",
        json=reference_params(source_patient=f"Patient/{township}"),
        headers={"User-Agent": "mpi-console/1.0 (operator wang)"},
    )
    assert r.status_code == 200, r.text
    answer = {p["name"]: p["resource"] for p in r.json()["parameter"]}
    assert master_ref(answer["source-patient"]) is None
    assert seealso(answer["master"]) == {f"Patient/{county}"}
    # The master's Provenance for the split names the operator's client beside the hub.
    version = answer["master"]["meta"]["versionId"]
    (prov,) = [
        p
        for p in await search(client, "Provenance", target=f"Patient/{master['id']}")
        if {"reference": f"Patient/{master['id']}/_history/{version}"} in p["target"]
    ]
    assert [a["who"]["display"] for a in prov["agent"]][1:] == ["mpi-console/1.0 (operator wang)"]
    assert prov["agent"][1]["type"]["coding"][0]["code"] == "performer"

    # The township's HIS sends the record again (same number): it is not linked again, and a third
    # member's record with that number joins her master, not the split record.
    r = await client.put(
        "/fhir/Patient", params={"identifier": "urn:yilian:member:DLZWSY:patient-id|T-1"}, json=township_body
    )
    assert r.status_code == 200 and master_ref(r.json()) is None, r.text
    village = await create(client, member_patient("HSZWSY", "V-1", resident_id=LI_XIULAN))
    (master,) = await masters(client)
    assert seealso(master) == {f"Patient/{county}", f"Patient/{village}"}
    everything = (await client.get(f"/fhir/Patient/{county}/$everything")).json()
    assert f"Patient/{township}" not in {f"Patient/{e['resource']['id']}" for e in everything["entry"]}

    # The operator was wrong after all: linking undoes the split.
    r = await client.post(
        "/fhir/Patient/$mpi-link",
        json=reference_params(source_patient=f"Patient/{township}", target_patient=f"Patient/{village}"),
    )
    assert r.status_code == 200, r.text
    (master,) = await masters(client)
    assert seealso(master) == {f"Patient/{county}", f"Patient/{village}", f"Patient/{township}"}
    assert "extension" not in master
    r = await client.put(
        "/fhir/Patient", params={"identifier": "urn:yilian:member:DLZWSY:patient-id|T-1"}, json=township_body
    )
    assert master_ref(r.json()) == f"Patient/{master['id']}"

    # Both corrections are audited like every request.
    await hub.audit.flush()
    audits = await search(client, "AuditEvent", _count="200")
    ops = sorted(d["valueString"] for a in audits for e in a.get("entity", []) for d in e.get("detail", []))
    assert ops == ["$everything", "$mpi-link", "$mpi-split"]


async def test_linking_records_without_a_resident_id(client: httpx.AsyncClient) -> None:
    county = await create(
        client, member_patient("XYRMYY", "C-1", name=[{"text": "王伟"}], birthDate="1970-01-02")
    )
    township = await create(client, member_patient("DLZWSY", "T-1", name=[{"text": "王 伟"}]))
    assert await masters(client) == []
    r = await client.post(
        "/fhir/Patient/$mpi-link",
        json=reference_params(source_patient=f"Patient/{township}", target_patient=f"Patient/{county}"),
    )
    assert r.status_code == 200, r.text
    (master,) = await masters(client)
    assert seealso(master) == {f"Patient/{county}", f"Patient/{township}"}
    assert master["birthDate"] == "1970-01-02"
    # The member's next update (without a resident ID, without the link) keeps its record linked.
    body = member_patient("DLZWSY", "T-1", name=[{"text": "王伟"}], gender="male")
    r = await client.put(
        "/fhir/Patient", params={"identifier": "urn:yilian:member:DLZWSY:patient-id|T-1"}, json=body
    )
    assert master_ref(r.json()) == f"Patient/{master['id']}"
    (master,) = await masters(client)
    assert master["gender"] == "male"
    (prov,) = await search(client, "Provenance", target=f"Patient/{master['id']}")
    assert prov["entity"] == [{"role": "source", "what": {"reference": f"Patient/{township}"}}]


async def test_link_and_split_refuse_what_they_cannot_do(client: httpx.AsyncClient) -> None:
    a = await create(client, member_patient("XYRMYY", "C-1", resident_id=LI_XIULAN))
    await create(client, member_patient("DLZWSY", "T-1", resident_id=LI_XIULAN))
    alone = await create(client, member_patient("DLZWSY", "T-2"))
    (master,) = await masters(client)
    cases = [
        ("split", reference_params(source_patient=f"Patient/{master['id']}"), 422),
        ("split", reference_params(source_patient=f"Patient/{alone}"), 422),
        ("split", reference_params(source_patient="Patient/nope"), 404),
        ("split", reference_params(source_patient="Observation/1"), 400),
        ("split", {"resourceType": "Parameters"}, 400),
        ("link", reference_params(source_patient=f"Patient/{a}"), 400),
        ("link", reference_params(source_patient=f"Patient/{a}", target_patient=f"Patient/{a}"), 400),
        ("link", reference_params(source_patient=f"Patient/{alone}", target_patient="Patient/nope"), 404),
    ]
    for op, body, status in cases:
        r = await client.post(f"/fhir/Patient/$mpi-{op}", json=body)
        assert r.status_code == status, (op, body, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
    (after,) = await masters(client)
    assert after["meta"]["versionId"] == master["meta"]["versionId"]
