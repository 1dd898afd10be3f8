"""The consortium record fed by two members' HIS over real MLLP sockets: one person, one master.

The county hospital (FYXRMYY, GB 18030) and the township centre (FYXWSY, UTF-8) each register 张三 with
their own MRN and the same 居民身份证; the county's lab result is then part of the township's view."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from adapters.hl7v2.client import send_all
from adapters.hl7v2.listener import MllpService
from tests.adapters.hl7v2.conftest import sample
from tests.records import masters, search

TOWNSHIP_SYSTEM = "urn:yilian:member:FYXWSY:patient-id"
COUNTY_SYSTEM = "urn:yilian:member:FYXRMYY:patient-id"


def county_registration(control: str = "ADT7001", mrn: str = "ZY-5566") -> bytes:
    """The township's A04 as the county's HIS sends it: its own MRN and facility, GB 18030."""
    text = (
        sample("adt_a04_utf8")
        .decode()
        .replace("|FYXWSY|YILIAN", "|FYXRMYY|YILIAN")
        .replace("MRN10001^^^FYXWSY", f"{mrn}^^^FYXRMYY")
        .replace("|ADT0001|", f"|{control}|")
        .replace("UNICODE UTF-8", "GB 18030-2000")
    )
    return text.encode("gb18030")


def county_result(mrn: str = "ZY-5566") -> bytes:
    return sample("oru_r01").replace(b"MRN10001^^^FYXWSY", f"{mrn}^^^FYXRMYY".encode())


async def source(fhir: httpx.AsyncClient, system: str, mrn: str) -> dict[str, Any]:
    (found,) = await search(
        fhir, "Patient", identifier=f"{system}|{mrn}", **{"_tag:not": "urn:yilian:mpi|master"}
    )
    return found


def acked(acks: list[bytes]) -> list[str]:
    return [
        next(s for s in a.split(b"\r") if s.startswith(b"MSA")).decode("latin-1").split("|")[1] for a in acks
    ]


async def test_two_members_register_one_person_and_see_each_others_results(
    mllp: MllpService, fhir: httpx.AsyncClient
) -> None:
    acks = await send_all(
        "127.0.0.1", mllp.port, [sample("adt_a04_utf8"), county_registration(), county_result()]
    )
    assert acked(acks) == ["AA", "AA", "AA"]
    township = await source(fhir, TOWNSHIP_SYSTEM, "MRN10001")
    county = await source(fhir, COUNTY_SYSTEM, "ZY-5566")
    (master,) = await masters(fhir)
    assert {lk["other"]["reference"] for lk in master["link"]} == {
        f"Patient/{township['id']}",
        f"Patient/{county['id']}",
    }
    for record in (township, county):
        assert {"other": {"reference": f"Patient/{master['id']}"}, "type": "refer"} in record["link"]
    assert master["name"][0]["text"] == "张三"  # decoded from both charsets alike

    r = await fhir.get(f"/fhir/Patient/{township['id']}/$everything")
    assert r.status_code == 200, r.text
    types = {e["resource"]["resourceType"] for e in r.json()["entry"]}
    assert {"DiagnosticReport", "Observation", "Encounter"} <= types
    (report,) = [
        e["resource"] for e in r.json()["entry"] if e["resource"]["resourceType"] == "DiagnosticReport"
    ]
    assert report["subject"]["reference"] == f"Patient/{county['id']}"

    # The township's next A08 (no link in it: the HIS knows nothing of the master) keeps the link.
    a08 = (
        sample("adt_a04_utf8")
        .replace(b"ADT^A04^ADT_A01|ADT0001", b"ADT^A08^ADT_A01|ADT0002")
        .replace(b"EVN|A04", b"EVN|A08")
        .replace(b"13800138000", b"13800138001")
    )
    assert acked(await send_all("127.0.0.1", mllp.port, [a08])) == ["AA"]
    township_now = await source(fhir, TOWNSHIP_SYSTEM, "MRN10001")
    assert township_now["meta"]["versionId"] != township["meta"]["versionId"]
    assert township_now["link"] == township["link"]
    (master_now,) = await masters(fhir)
    assert "13800138001" in {t.get("value") for t in master_now["telecom"]}


async def test_registrations_over_two_connections_at_once_make_one_master(
    mllp: MllpService, fhir: httpx.AsyncClient
) -> None:
    township = [
        sample("adt_a04_utf8")
        .replace(b"MRN10001", f"T{i:03d}".encode())
        .replace(b"ADT0001", f"TA{i:03d}".encode())
        for i in range(20)
    ]
    county = [county_registration(f"CA{i:03d}", f"C{i:03d}") for i in range(20)]
    results = await asyncio.gather(
        send_all("127.0.0.1", mllp.port, township), send_all("127.0.0.1", mllp.port, county)
    )
    assert acked(results[0] + results[1]) == ["AA"] * 40
    (master,) = await masters(fhir)
    assert len(master["link"]) == 40
    linked = await search(fhir, "Patient", link=f"Patient/{master['id']}", _count="100")
    assert len(linked) == 40


async def test_a_split_record_stays_split_when_its_member_sends_again(
    mllp: MllpService, fhir: httpx.AsyncClient
) -> None:
    assert acked(await send_all("127.0.0.1", mllp.port, [sample("adt_a04_utf8"), county_registration()])) == [
        "AA",
        "AA",
    ]
    township = await source(fhir, TOWNSHIP_SYSTEM, "MRN10001")
    county = await source(fhir, COUNTY_SYSTEM, "ZY-5566")
    split = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "source-patient", "valueReference": {"reference": f"Patient/{township['id']}"}}
        ],
    }
    r = await fhir.post("/fhir/Patient/$mpi-split", json=split)
    assert r.status_code == 200, r.text
    a08 = (
        sample("adt_a04_utf8")
        .replace(b"ADT^A04^ADT_A01|ADT0001", b"ADT^A08^ADT_A01|ADT0009")
        .replace(b"EVN|A04", b"EVN|A08")
        .replace(b"13800138000", b"13800138009")
    )
    assert acked(await send_all("127.0.0.1", mllp.port, [a08, county_registration("ADT7002")])) == [
        "AA",
        "AA",
    ]
    township_now = await source(fhir, TOWNSHIP_SYSTEM, "MRN10001")
    assert "13800138009" in {t.get("value") for t in township_now["telecom"]}  # the update applied
    assert not [lk for lk in township_now.get("link", []) if lk["type"] == "refer"]
    (master,) = await masters(fhir)
    assert {lk["other"]["reference"] for lk in master["link"]} == {f"Patient/{county['id']}"}


async def test_a_sparse_a08_changes_only_what_it_sends_and_clears_what_it_sends_empty(
    mllp: MllpService, fhir: httpx.AsyncClient
) -> None:
    assert acked(await send_all("127.0.0.1", mllp.port, [sample("adt_a04_utf8")])) == ["AA"]
    before = await source(fhir, TOWNSHIP_SYSTEM, "MRN10001")
    # An A08 with only the MRN (no 身份证), a new name, PID-13 sent as "" (delete the home phones)
    # and no address, birth date or sex (no change).
    a08 = (
        "MSH|^~\\&|HIS|FYXWSY|YILIAN|YLHUB|20240316090000||ADT^A08^ADT_A01|ADT0108|P|2.5||||||UNICODE UTF-8\r"
        "EVN|A08|20240316090000\r"
        'PID|1||MRN10001^^^FYXWSY^MR||张^叁^^^^^L^I||||||||""\r'
    ).encode()
    assert acked(await send_all("127.0.0.1", mllp.port, [a08])) == ["AA"]
    after = await source(fhir, TOWNSHIP_SYSTEM, "MRN10001")
    assert after["name"][0]["given"] == ["叁"]  # sent: replaced
    assert {"system": "urn:oid:2.16.156.10011.1.3", "value": "330102198005121233"} in [
        {"system": i["system"], "value": i["value"]} for i in after["identifier"]
    ]  # not sent: kept
    for kept in ("birthDate", "gender", "address"):
        assert after[kept] == before[kept], kept
    assert "telecom" not in after  # sent as "": deleted
    assert [lk for lk in after.get("link", []) if lk["type"] == "refer"] == [
        lk for lk in before.get("link", []) if lk["type"] == "refer"
    ]
