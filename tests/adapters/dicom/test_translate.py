from __future__ import annotations

from pydicom.uid import generate_uid

from adapters.dicom.instances import StoredInstance
from adapters.dicom.summary import summarize
from adapters.dicom.translate import StudyContext, dicom_datetime, translate_study
from tests.adapters.dicom.synthetic import make_instance, part10


def _record(ds, received="2026-11-23T01:00:00.000+00:00", ae="TOWNA", member="org-town-a"):
    return StoredInstance(summarize(part10(ds)), "0" * 64, 1, received, ae, member)


def _entries(bundle):
    return {e["resource"]["resourceType"]: e for e in bundle["entry"]}


def test_study_bundle_shape():
    study, s1, s2 = generate_uid(), generate_uid(), generate_uid()
    records = [
        _record(make_instance(study, s1, instance_number=1), "2026-11-23T01:00:02.000+00:00"),
        _record(make_instance(study, s1, instance_number=2), "2026-11-23T01:00:01.000+00:00"),
        _record(make_instance(study, s2, modality="MR", series_number=2)),
    ]
    ctx = StudyContext("http://hub/dicomweb", member="org-town-a", service_request_id="sr1")
    bundle = translate_study(records, ctx)
    assert bundle["type"] == "transaction"
    e = _entries(bundle)
    req = e["ImagingStudy"]["request"]
    assert req == {"method": "PUT", "url": f"ImagingStudy?identifier=urn:dicom:uid|urn:oid:{study}"}
    img = e["ImagingStudy"]["resource"]
    assert img["numberOfSeries"] == 2 and img["numberOfInstances"] == 3
    assert [s["numberOfInstances"] for s in img["series"]] == [2, 1]
    assert {m["code"] for m in img["modality"]} == {"CT", "MR"}
    assert img["started"] == "2026-11-23T09:30:00+08:00"
    assert img["basedOn"] == [{"reference": "ServiceRequest/sr1"}]
    assert img["subject"]["reference"] == e["Patient"]["fullUrl"]
    assert img["endpoint"][0]["reference"] == e["Endpoint"]["fullUrl"]
    assert img["series"][0]["bodySite"]["code"] == "51185008"
    assert img["referrer"]["display"] == "李 伟"
    assert img["extension"][0]["valueDateTime"] == "2026-11-23T01:00:00.000+00:00"
    assert e["Endpoint"]["resource"]["connectionType"]["code"] == "dicom-wado-rs"
    assert e["Endpoint"]["resource"]["address"] == "http://hub/dicomweb"
    patient = e["Patient"]["resource"]
    assert e["Patient"]["request"]["ifNoneExist"] == f"identifier={patient['identifier'][0]['system']}|P001"
    assert patient["identifier"][0]["system"] == "urn:yilian:member:TOWNSHIP-A:patient-id"
    assert patient["name"][0]["family"] == "王" and patient["name"][0]["given"] == ["小明"]
    assert patient["birthDate"] == "1960-01-02" and patient["gender"] == "male"
    org = e["Organization"]
    assert org["request"]["ifNoneExist"] == "identifier=urn:yilian:member|org-town-a"
    assert patient["managingOrganization"] == {"reference": org["fullUrl"]}
    assert img["identifier"][1]["assigner"] == {"reference": org["fullUrl"]}
    assert e["Provenance"]["resource"]["target"] == [{"reference": e["ImagingStudy"]["fullUrl"]}]


def test_patient_without_issuer_is_scoped_by_member_and_without_id_by_study():
    study = generate_uid()
    records = [_record(make_instance(study, generate_uid(), issuer=None))]
    no_issuer = translate_study(records, StudyContext("x"))
    assert _entries(no_issuer)["Patient"]["resource"]["identifier"][0]["system"].endswith(
        "org-town-a:patient-id"
    )
    no_id = translate_study([_record(make_instance(study, generate_uid(), patient_id=""))], StudyContext("x"))
    assert _entries(no_id)["Patient"]["resource"]["identifier"][0]["value"] == f"urn:oid:{study}"


def test_dicom_datetimes():
    assert dicom_datetime("20261123", "0930", "", "Asia/Shanghai") == "2026-11-23T09:30:00+08:00"
    assert dicom_datetime("20261123", "093000.123456", "+0000", "Asia/Shanghai") == (
        "2026-11-23T09:30:00.123+00:00"
    )
    assert dicom_datetime("20261123", "", "", "Asia/Shanghai") == "2026-11-23"
    assert dicom_datetime("", "0930", "", "Asia/Shanghai") is None
