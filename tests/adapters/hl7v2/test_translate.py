"""Translators as pure functions: message → transaction Bundle (no store, no sockets)."""

from __future__ import annotations

import pytest

from adapters.hl7v2.messages.ref_i12 import DIRECTION_SYSTEM
from adapters.hl7v2.router import Router, build_router
from adapters.hl7v2.transaction import TranslationError, provenance_id
from adapters.identity import CN_RESIDENT_ID_SYSTEM
from tests.adapters.hl7v2.conftest import resources, sample, translate


def test_adt_a04_patient_names_identifiers_phones_address() -> None:
    t = translate("adt_a04_utf8")
    [patient] = resources(t.bundle, "Patient")
    assert patient["identifier"][0] == {
        "system": "urn:yilian:member:FYXWSY:patient-id",
        "value": "MRN10001",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
    }
    assert patient["identifier"][1]["system"] == CN_RESIDENT_ID_SYSTEM
    assert patient["identifier"][1]["value"] == "330102198005121233"
    ideographic, alphabetic = patient["name"]
    assert (ideographic["family"], ideographic["given"], ideographic["text"]) == ("张", ["三"], "张三")
    assert ideographic["extension"][0]["valueCode"] == "IDE"
    assert (alphabetic["family"], alphabetic["extension"][0]["valueCode"]) == ("Zhang", "ABC")
    assert patient["gender"] == "male"
    assert patient["birthDate"] == "1980-05-12"
    assert {"system": "phone", "value": "+86 571 88886666", "use": "home"} in patient["telecom"]
    assert {"system": "phone", "value": "13800138000", "use": "mobile"} in patient["telecom"]
    address = patient["address"][0]
    assert (address["state"], address["city"], address["district"]) == ("浙江省", "杭州市", "西湖区")
    assert address["text"] == "浙江省杭州市西湖区文一西路88号"
    assert t.patient_key == "urn:yilian:member:FYXWSY:patient-id|MRN10001"
    [entry] = [e for e in t.bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert entry["request"] == {
        "method": "PUT",
        "url": "Patient?identifier=urn:yilian:member:FYXWSY:patient-id|MRN10001",
        # v2 update semantics: what the PID leaves empty stays (nothing is sent as "" here)
        "extension": [
            {
                "url": "http://yilian.org.cn/fhir/StructureDefinition/update-keeps-absent-elements",
                "valueBoolean": True,
            }
        ],
    }


def test_encounter_from_pv1_with_visit_number_and_time_zone() -> None:
    t = translate("adt_a01_gb18030")
    [enc] = resources(t.bundle, "Encounter")
    assert enc["class"]["code"] == "IMP"
    assert enc["status"] == "in-progress"
    assert enc["period"] == {"start": "2024-03-15T10:30:00+08:00"}  # no zone sent: Asia/Shanghai
    assert enc["identifier"][0]["value"] == "ZY-V-0002"
    [patient] = resources(t.bundle, "Patient")
    assert patient["_birthDate"]["extension"][0]["valueDateTime"] == "1992-11-03T08:15:00+08:00"
    a08 = translate("adt_a08_gbk")
    [enc] = resources(a08.bundle, "Encounter")
    assert enc["status"] == "finished" and enc["period"]["end"] == "2024-03-20T09:00:00+08:00"


def test_every_bundle_has_provenance_naming_member_and_message() -> None:
    for name in ("adt_a04_utf8", "orm_o01", "oru_r01", "ref_i12_up", "adt_a40"):
        t = translate(name)
        [prov] = resources(t.bundle, "Provenance")
        entity = prov["entity"][0]["what"]["identifier"]
        assert entity["system"].endswith(":hl7v2-message") and entity["value"]
        assert prov["agent"][0]["who"]["display"] in ("FYXWSY", "FYXRMYY", "XCWSS")
        assert prov["id"] == provenance_id(prov["agent"][0]["who"]["display"], entity["value"])
        targets = {r["reference"] for r in prov["target"]}
        written = {
            e["fullUrl"]
            for e in t.bundle["entry"]
            if e["resource"]["resourceType"] not in ("Provenance", "Parameters")  # an operation's input
        }
        assert written <= targets


def test_invalid_resident_id_is_rejected_naming_the_repetition() -> None:
    with pytest.raises(TranslationError) as err:
        translate("adt_a04_bad_resident_id")
    assert err.value.location == "PID-3[2]"
    assert err.value.code == "102"
    assert "check character" in err.value.reason


def test_missing_patient_identifier_names_pid3() -> None:
    with pytest.raises(TranslationError) as err:
        translate("adt_a04_missing_pid3")
    assert (err.value.location, err.value.code) == ("PID-3", "101")


def test_orm_service_request_requester_and_performer() -> None:
    t = translate("orm_o01")
    [sr] = resources(t.bundle, "ServiceRequest")
    assert sr["status"] == "active" and sr["intent"] == "order"
    assert sr["code"]["coding"][0] == {"code": "58410-2", "system": "http://loinc.org", "display": "血常规"}
    assert sr["identifier"][0]["system"] == "urn:yilian:member:FYXWSY:placer-order"
    assert sr["authoredOn"] == "2024-03-15T09:00:00+08:00"
    assert sr["priority"] == "routine"
    assert sr["reasonCode"][0]["coding"][0]["code"] == "J18.9"
    [role] = resources(t.bundle, "PractitionerRole")
    by_url = {e["fullUrl"]: e["resource"] for e in t.bundle["entry"]}
    assert by_url[sr["requester"]["reference"]] is role
    assert by_url[role["organization"]["reference"]]["identifier"][0]["value"] == "FYXWSY"
    assert by_url[sr["performer"][0]["reference"]]["identifier"][0]["value"] == "FYXRMYY"
    assert "encounter" in sr
    oml = translate("oml_o21")
    [sr2] = resources(oml.bundle, "ServiceRequest")
    assert sr2["code"]["coding"][0]["code"] == "2345-7"


def test_oru_report_observations_linked_to_service_request() -> None:
    t = translate("oru_r01")
    [report] = resources(t.bundle, "DiagnosticReport")
    [sr] = resources(t.bundle, "ServiceRequest")
    observations = resources(t.bundle, "Observation")
    assert len(observations) == 11 and len(report["result"]) == 11
    by_url = {e["fullUrl"]: e for e in t.bundle["entry"]}
    assert by_url[report["basedOn"][0]["reference"]]["resource"] is sr
    assert by_url[report["basedOn"][0]["reference"]]["request"]["ifNoneExist"].startswith(
        "identifier=urn:yilian:member:FYXWSY:placer-order"
    )
    assert report["status"] == "final" and report["issued"] == "2024-03-15T10:55:00+08:00"
    wbc, hb, plt, sg, look, note, abo, hbsag, dt_, ts, crea = observations
    assert wbc["valueQuantity"] == {
        "value": 12.5,
        "unit": "10*9/L",
        "code": "10*9/L",
        "system": "http://unitsofmeasure.org",
    }
    assert wbc["interpretation"][0]["coding"][0]["code"] == "H"
    assert (
        wbc["referenceRange"][0]["low"]["value"] == 3.5 and wbc["referenceRange"][0]["high"]["value"] == 9.5
    )
    assert hb["valueQuantity"]["value"] == 135 and isinstance(hb["valueQuantity"]["value"], int)
    assert plt["valueQuantity"]["comparator"] == ">" and plt["interpretation"][0]["coding"][0]["code"] == "HH"
    assert sg["valueRange"] == {"low": {"value": 1.01}, "high": {"value": 1.025}}
    assert look["valueString"] == "淡黄色，清亮"
    assert note["valueString"] == "白细胞升高，请结合临床。\n建议复查。"
    assert (
        abo["valueCodeableConcept"]["coding"][0]["system"] == "http://terminology.hl7.org/CodeSystem/v2-0005"
    )
    assert hbsag["valueCodeableConcept"]["coding"][0] == {
        "code": "260385009",
        "system": "http://snomed.info/sct",
        "display": "阴性",
    }
    assert dt_["valueDateTime"] == "2024-03-15"
    assert ts["valueDateTime"] == "2024-03-15T09:20:00+08:00"
    assert crea["referenceRange"][0]["high"]["value"] == 133 and "low" not in crea["referenceRange"][0]
    assert wbc["effectiveDateTime"] == "2024-03-15T10:00:00+08:00"
    assert all(o["category"][0]["coding"][0]["code"] == "laboratory" for o in observations)


def test_referral_up_service_request_and_task() -> None:
    t = translate("ref_i12_up")
    [sr] = resources(t.bundle, "ServiceRequest")
    [task] = resources(t.bundle, "Task")
    by_url = {e["fullUrl"]: e["resource"] for e in t.bundle["entry"]}
    assert {"system": DIRECTION_SYSTEM, "code": "up", "display": "上转 (referral up)"} in [
        c["coding"][0] for c in sr["category"]
    ]
    assert by_url[sr["requester"]["reference"]]["identifier"][0]["value"] == "XCWSS"
    assert by_url[sr["performer"][0]["reference"]]["identifier"][0]["value"] == "FYXRMYY"
    assert [r["coding"][0]["code"] for r in sr["reasonCode"]] == ["MED", "I10"]
    assert sr["note"][0]["text"].startswith("血压控制不佳")
    assert task["status"] == "requested" and by_url[task["focus"]["reference"]] is sr
    assert by_url[task["owner"]["reference"]]["identifier"][0]["value"] == "FYXRMYY"


def test_referral_down_direction_from_member_tiers_and_rri_answer() -> None:
    t = translate("ref_i12_down")
    [sr] = resources(t.bundle, "ServiceRequest")
    assert {"system": DIRECTION_SYSTEM, "code": "down", "display": "下转 (referral down)"} in [
        c["coding"][0] for c in sr["category"]
    ]
    rri = translate("rri_i12")
    [task] = resources(rri.bundle, "Task")
    [entry] = [e for e in rri.bundle["entry"] if e["resource"]["resourceType"] == "ServiceRequest"]
    assert task["status"] == "accepted"
    assert entry["request"]["method"] == "POST"  # the answer never overwrites the referral
    assert task["identifier"][0]["system"] == "urn:yilian:member:XCWSS:referral-task"


def test_referral_cancel_i14() -> None:
    raw = sample("ref_i12_up").replace(b"REF^I12^REF_I12", b"REF^I14^REF_I12").replace(b"REF0001", b"REF0009")
    t = translate(raw)
    assert resources(t.bundle, "Task")[0]["status"] == "cancelled"
    assert resources(t.bundle, "ServiceRequest")[0]["status"] == "revoked"


def test_a40_updates_the_survivor_and_invokes_merge_in_the_same_bundle() -> None:
    t = translate("adt_a40")
    [patient_entry] = [e for e in t.bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert patient_entry["resource"]["identifier"][0]["value"] == "C0099"
    [merge] = [e for e in t.bundle["entry"] if e["request"]["url"] == "Patient/$merge"]
    assert merge["request"]["method"] == "POST" and "fullUrl" not in merge
    assert merge["resource"]["parameter"] == [
        {
            "name": "source-patient-identifier",
            "valueIdentifier": {"system": "urn:yilian:member:XCWSS:patient-id", "value": "C0100"},
        },
        {"name": "target-patient", "valueReference": {"reference": patient_entry["fullUrl"]}},
    ]
    assert t.patient_key is None  # applied alone: it concerns two patients
    assert t.fields["Parameters.source-patient-identifier"] == ("MRG-1", "204")


def test_router_refuses_double_registration_and_names_unknown_types() -> None:
    router = Router()
    router.register("ADT", "A01", lambda m, c: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError):
        router.register("adt", "a01", lambda m, c: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(TranslationError) as err:
        build_router().resolve("ADT", "A99")
    assert err.value.code == "201"
    with pytest.raises(TranslationError) as err:
        build_router().resolve("MFN", "M02")
    assert err.value.code == "200"


def test_timestamps_keep_precision_and_zone() -> None:
    from zoneinfo import ZoneInfo

    from adapters.hl7v2.datatypes import dtm

    tz = ZoneInfo("Asia/Shanghai")
    assert dtm("2024", tz) == "2024"
    assert dtm("202403", tz) == "2024-03"
    assert dtm("20240315", tz) == "2024-03-15"
    assert dtm("2024031508", tz) == "2024-03-15T08:00:00+08:00"
    assert dtm("20240315083015.1234-0500", tz) == "2024-03-15T08:30:15.1234-05:00"
    assert dtm("202403150830+0000", tz) == "2024-03-15T08:30:00+00:00"
