"""The DICOM edge's Patient joins the consortium record: a township PACS sends a study whose Other
Patient IDs carry the 居民身份证 the county registered; the study shows in the county's record."""

from __future__ import annotations

import asyncio
import datetime as dt

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from adapters.dicom.service import start_dicom
from fhir_server.hub import open_hub
from fhir_server.settings import Settings
from terminology import cn_resident_id
from tests.adapters.dicom.conftest import wait_for
from tests.adapters.dicom.synthetic import make_instance
from tests.records import masters, search

LI = cn_resident_id.make("411302", dt.date(1960, 1, 2), 121)


@pytest.fixture(params=[0, 1], ids=["in-process", "worker"])
async def hub_and_dicom(tmp_path, request):
    settings = Settings(
        db=tmp_path / "hub.db",
        dicom_storage=tmp_path / "dicom",
        dicom_stable_seconds=0.3,
        dicom_known_aes={"TOWNA": "DLZWSY"},
        dicom_workers=request.param,
        mllp_port=0,
        audit_flush_seconds=3600.0,
    )
    async with open_hub(settings) as hub:
        service = await start_dicom(settings, hub.sink, port=0)
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.app), base_url="http://t")
        try:
            yield service, client
        finally:
            await client.aclose()
            await service.close()


def _store(port: int, datasets: list[Dataset]) -> list[int]:
    ae = AE(ae_title="TOWNA")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="YILIAN")
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(ds).Status) for ds in datasets]
    assoc.release()
    return statuses


def _with_other_ids(ds: Dataset, *items: tuple[str, str]) -> Dataset:
    seq = []
    for value, issuer in items:
        item = Dataset()
        item.PatientID = value
        item.IssuerOfPatientID = issuer
        item.TypeOfPatientID = "TEXT"
        seq.append(item)
    ds.OtherPatientIDsSequence = seq
    return ds


async def test_a_pacs_patient_with_the_resident_id_joins_the_persons_master(hub_and_dicom) -> None:
    service, client = hub_and_dicom
    county = {
        "resourceType": "Patient",
        "identifier": [
            {"system": "urn:yilian:member:XYRMYY:patient-id", "value": "C-1"},
            {"system": cn_resident_id.SYSTEM, "value": LI},
        ],
        "name": [{"text": "王小明"}],
    }
    r = await client.post("/fhir/Patient", json=county)
    assert r.status_code == 201, r.text
    county_id = r.json()["id"]

    study = generate_uid()
    ds = _with_other_ids(make_instance(study, generate_uid(), patient_id="DR-0007"), (LI, "CHN"))
    stranger = _with_other_ids(
        make_instance(generate_uid(), generate_uid(), patient_id="DR-0008"),
        (LI[:-1] + ("0" if LI[-1] != "0" else "1"), "CHN"),  # a wrong check character: left out
    )
    assert await asyncio.to_thread(_store, service.port, [ds, stranger]) == [0, 0]

    (master,) = await wait_for(lambda: masters(client), timeout=10)
    (pacs_patient,) = await search(
        client, "Patient", identifier="DR-0007", **{"_tag:not": "urn:yilian:mpi|master"}
    )
    assert {lk["other"]["reference"] for lk in master["link"]} == {
        f"Patient/{county_id}",
        f"Patient/{pacs_patient['id']}",
    }
    everything = (await client.get(f"/fhir/Patient/{county_id}/$everything")).json()
    studies = [e["resource"] for e in everything["entry"] if e["resource"]["resourceType"] == "ImagingStudy"]
    assert [s["subject"]["reference"] for s in studies] == [f"Patient/{pacs_patient['id']}"]
    await wait_for(lambda: search(client, "Patient", identifier="DR-0008"))
    (other,) = await search(client, "Patient", identifier="DR-0008")
    assert all(i["system"] != cn_resident_id.SYSTEM for i in other["identifier"]) and "link" not in other
