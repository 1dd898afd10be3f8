"""C-FIND and QIDO-RS against the real hub: patients and studies come from the FHIR store, series and
instances from the instance index, all matched with the same DICOM rules."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
)

from adapters.dicom import multipart
from adapters.dicom.dicomweb import build_dicomweb_app
from adapters.dicom.service import start_dicom
from fhir_server.hub import open_hub
from fhir_server.settings import Settings
from tests.adapters.dicom.conftest import wait_for
from tests.adapters.dicom.synthetic import make_instance, part10
from tests.adapters.dicom.test_scp import _find, _store_all


def _settings(tmp_path, **more) -> Settings:
    """A hub whose storage SCP knows AE TOWNA (member org-town-a) and publishes studies quickly."""
    return Settings(
        db=tmp_path / "hub.db",
        dicom_storage=tmp_path / "dicom",
        dicom_stable_seconds=0.3,
        dicom_known_aes={"TOWNA": "org-town-a"},
        dicom_workers=1,
        **more,
    )


@pytest.fixture
async def hub_listener(tmp_path):
    settings = _settings(tmp_path)
    async with open_hub(settings) as hub:
        service = await start_dicom(settings, hub.sink, port=0)
        hub.app.mount("/dicomweb", build_dicomweb_app(settings, hub.sink, service.instances))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.app), base_url="http://t")
        try:
            yield service, client
        finally:
            await client.aclose()
            await service.close()


def _q(level: str, **keys: str) -> Dataset:
    q = Dataset()
    q.SpecificCharacterSet = "ISO_IR 192"
    q.QueryRetrieveLevel = level
    for k, val in keys.items():
        setattr(q, k, val)
    return q


async def test_c_find_levels_wildcards_ranges_and_uid_lists(hub_listener):
    service, client = hub_listener
    a, b, series_a = generate_uid(), generate_uid(), generate_uid()
    sent = [
        make_instance(a, series_a, name="Wang^Xiaoming=王^小明", patient_id="P1"),
        make_instance(a, series_a, name="Wang^Xiaoming=王^小明", patient_id="P1", instance_number=2),
        make_instance(
            b, generate_uid(), name="Li^Na=李^娜", patient_id="P2", modality="MR", accession="ACC2"
        ),
    ]
    await asyncio.to_thread(_store_all, service.port, sent)

    async def published():
        r = await client.get("/fhir/ImagingStudy")
        return r.json().get("total") == 2

    await wait_for(published)
    study_root = StudyRootQueryRetrieveInformationModelFind

    async def find(model, query):
        return await asyncio.to_thread(_find, service.port, model, query)

    found = await find(
        study_root, _q("STUDY", PatientName="王*", StudyInstanceUID="", NumberOfStudyRelatedInstances="")
    )
    assert [(f.StudyInstanceUID, int(f.NumberOfStudyRelatedInstances)) for f in found] == [(a, 2)]
    assert found[0].PatientName.ideographic == "王^小明"

    found = await find(study_root, _q("STUDY", StudyDate="20260101-20261231", StudyInstanceUID=f"{a}\\{b}",
                                       ModalitiesInStudy="MR"))  # fmt: skip
    assert [f.StudyInstanceUID for f in found] == [b]
    assert await find(study_root, _q("STUDY", StudyDate="20250101-20251231", StudyInstanceUID="")) == []
    found = await find(study_root, _q("STUDY", AccessionNumber="ACC2", PatientID="P2", StudyInstanceUID=""))
    assert [f.StudyInstanceUID for f in found] == [b]

    found = await find(
        PatientRootQueryRetrieveInformationModelFind, _q("PATIENT", PatientID="P*", PatientName="")
    )
    assert sorted(f.PatientID for f in found) == ["P1", "P2"]

    found = await find(study_root, _q("SERIES", StudyInstanceUID=a, SeriesInstanceUID="", Modality=""))
    assert [(f.SeriesInstanceUID, f.Modality) for f in found] == [(series_a, "CT")]
    found = await find(
        study_root, _q("IMAGE", StudyInstanceUID=a, SeriesInstanceUID=series_a, SOPInstanceUID="")
    )
    assert sorted(f.SOPInstanceUID for f in found) == sorted(d.SOPInstanceUID for d in sent[:2])

    # QIDO-RS answers the same queries the same way
    r = await client.get("/dicomweb/studies", params={"PatientName": "王*"})
    assert [s["0020000D"]["Value"][0] for s in r.json()] == [a]
    r = await client.get(f"/dicomweb/studies/{a}/series")
    assert [s["0020000E"]["Value"][0] for s in r.json()] == [series_a]


async def test_studies_registered_over_fhir_are_found_too(hub_listener):
    service, client = hub_listener
    new_patient = {"resourceType": "Patient", "identifier": [{"value": "P9"}], "name": [{"family": "Zhao"}]}
    r = await client.post("/fhir/Patient", json=new_patient)
    patient = r.json()["id"]
    uid = generate_uid()
    study = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
        "subject": {"reference": f"Patient/{patient}"},
        "started": "2026-11-20T08:00:00+08:00",
        "modality": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "US"}],
    }
    assert (await client.post("/fhir/ImagingStudy", json=study)).status_code == 201
    found = await asyncio.to_thread(
        _find, service.port, StudyRootQueryRetrieveInformationModelFind,
        _q("STUDY", PatientName="ZHAO*", StudyDate="20261120", StudyInstanceUID="", ModalitiesInStudy=""),
    )  # fmt: skip
    assert [(f.StudyInstanceUID, f.ModalitiesInStudy) for f in found] == [(uid, "US")]


async def test_turnaround_is_queryable_per_member_over_fhir(hub_listener, tmp_path):
    from adapters.base import HttpSink
    from adapters.dicom.commands import collect

    service, client = hub_listener
    study = generate_uid()
    await asyncio.to_thread(_store_all, service.port, [make_instance(study, generate_uid())])

    async def imaging_study():
        r = await client.get("/fhir/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{study}"})
        entries = r.json().get("entry", [])
        return entries[0]["resource"] if entries else None

    img = await wait_for(imaging_study)
    received = img["extension"][0]["valueDateTime"]
    from datetime import datetime, timedelta

    issued = (datetime.fromisoformat(received) + timedelta(minutes=25)).isoformat()
    report = {
        "resourceType": "DiagnosticReport",
        "status": "final",
        "code": {"text": "胸部CT报告"},
        "subject": img["subject"],
        "issued": issued,
        "imagingStudy": [{"reference": f"ImagingStudy/{img['id']}"}],
    }
    assert (await client.post("/fhir/DiagnosticReport", json=report)).status_code == 201
    app = client._transport.app  # the same hub app, through HttpSink as the CLI command uses it
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")
    rows = await collect(HttpSink("http://t/fhir", client=http), "org-town-a")
    assert [(r.study_uid, r.category, round(r.minutes or 0), r.met) for r in rows] == [
        (study, "outpatient", 25, True)
    ]
    assert await collect(HttpSink("http://t/fhir", client=httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://t")), "org-elsewhere") == []  # fmt: skip


async def test_stow_rs_updates_the_imaging_study(hub_listener):
    _service, client = hub_listener
    study = generate_uid()
    datasets = [make_instance(study, generate_uid(), instance_number=i) for i in range(2)]
    bad = b"not dicom at all"
    body, content_type = multipart.build([*(part10(d) for d in datasets), bad], "application/dicom")
    r = await client.post("/dicomweb/studies", content=body, headers={"content-type": content_type})
    assert r.status_code == 202  # stored two, refused one
    result = r.json()
    assert len(result["00081199"]["Value"]) == 2
    assert result["00081198"]["Value"][0]["00081197"]["Value"] == [0xC000]

    async def published():
        params = {"identifier": f"urn:dicom:uid|urn:oid:{study}"}
        entries = (await client.get("/fhir/ImagingStudy", params=params)).json().get("entry", [])
        return entries and entries[0]["resource"]["numberOfInstances"] == 2

    await wait_for(published)


async def test_dicom_traffic_is_audited(hub_listener):
    """C-STORE (through a storage worker), C-FIND and QIDO-RS each leave an AuditEvent naming the
    calling AE (or HTTP client), its address and the study."""
    service, client = hub_listener
    study = generate_uid()
    await asyncio.to_thread(_store_all, service.port, [make_instance(study, generate_uid(), patient_id="P9")])
    await asyncio.to_thread(
        _find, service.port, StudyRootQueryRetrieveInformationModelFind, _q("STUDY", StudyInstanceUID="")
    )
    assert (await client.get("/dicomweb/studies", params={"PatientID": "P9"})).status_code == 200
    dcm = "http://dicom.nema.org/resources/ontology/DCM"

    async def events() -> dict[str, dict]:
        r = await client.get("/fhir/AuditEvent", params={"_count": "100"})
        return {
            e["resource"]["subtype"][0]["code"]: e["resource"]
            for e in r.json().get("entry", [])
            if e["resource"]["type"].get("system") == dcm
        }

    async def all_three() -> bool:
        return {"C-STORE", "C-FIND", "QIDO-RS"} <= set(await events())

    await wait_for(all_three, timeout=15)
    found = await events()
    store = found["C-STORE"]
    assert store["type"]["code"] == "110107" and store["action"] == "C"
    assert store["agent"][0]["who"]["display"] == "TOWNA"
    assert store["agent"][0]["network"]["address"] == "127.0.0.1"
    assert store["entity"][0]["what"]["identifier"]["value"] == f"urn:oid:{study}"
    assert found["C-FIND"]["type"]["code"] == "110112"
    assert found["QIDO-RS"]["type"]["code"] == "110112"


async def test_dicomweb_shows_a_member_the_studies_of_its_persons_only(tmp_path):
    """QIDO-RS and WADO-RS by a member's viewer: the studies of persons its member has a care
    relationship with (here: the township's modality, AE TOWNA of member org-town-a, registered the
    patient); another member's viewer
    finds nothing and gets 404."""
    tokens = {
        "t-admin": "ops",
        "t-town": {"client": "town-viewer", "member": "org-town-a", "role": "reader"},
        "t-village": {"client": "village-viewer", "member": "HSZWSY", "role": "reader"},
    }
    settings = _settings(tmp_path, api_tokens=tokens, match_review=False)
    admin, town, village = ({"Authorization": f"Bearer {t}"} for t in ("t-admin", "t-town", "t-village"))
    async with open_hub(settings) as hub:
        service = await start_dicom(settings, hub.sink, port=0)
        hub.app.mount("/dicomweb", build_dicomweb_app(settings, hub.sink, service.instances))
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=hub.app), base_url="http://t"
        ) as client:
            try:
                study = generate_uid()
                await asyncio.to_thread(_store_all, service.port, [make_instance(study, generate_uid())])

                async def published():
                    return (await client.get("/dicomweb/studies", headers=admin)).json()

                await wait_for(published)
                assert len((await client.get("/dicomweb/studies", headers=town)).json()) == 1
                assert (await client.get("/dicomweb/studies", headers=village)).json() == []
                series = f"/dicomweb/studies/{study}/series"
                assert len((await client.get(series, headers=town)).json()) == 1
                assert (await client.get(series, headers=village)).json() == []
                metadata = f"/dicomweb/studies/{study}/metadata"
                assert (await client.get(metadata, headers=town)).status_code == 200
                assert (await client.get(metadata, headers=village)).status_code == 404
            finally:
                await service.close()
