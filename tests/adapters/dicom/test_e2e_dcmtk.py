"""End to end with real peers: dcmtk tools against the listener, the real hub behind it, FHIR and DICOMweb.

The remote-reading flow: a township modality sends (storescu), the county reads the ImagingStudy over
FHIR, finds it (findscu), retrieves it (getscu / movescu) and a viewer fetches it via DICOMweb; bytes
out equal bytes in everywhere.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess

import httpx
import pytest
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from adapters.dicom import multipart
from adapters.dicom.dicomweb import build_dicomweb_app
from adapters.dicom.service import start_dicom
from fhir_server.hub import open_hub
from fhir_server.settings import Settings
from tests.adapters.dicom.conftest import DCMTK_TOOLS, needs_dcmtk, wait_for
from tests.adapters.dicom.synthetic import dataset_bytes, make_instance, part10, write

pytestmark = [needs_dcmtk, pytest.mark.dcmtk]

# pydicom's own test files with the storescu option that proposes their transfer syntax as is
PYDICOM_FILES = {
    "CT_small.dcm": "-xe",  # explicit VR little endian first
    "MR_small.dcm": "-xe",  # explicit VR little endian first
    "MR_small_RLE.dcm": "-xr",  # RLE Lossless
    "JPEG2000.dcm": "-xw",  # JPEG 2000
    "MR_small_jp2klossless.dcm": "-xv",  # JPEG 2000 lossless
    "SC_rgb_jpeg_dcmtk.dcm": "-xy",  # JPEG baseline
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a dcmtk tool by its resolved path (not whatever `storescu` comes first on PATH)."""
    env = dict(os.environ, TCP_NODELAY="1")
    command = [str(DCMTK_TOOLS[tool]), *args]
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, env=env, timeout=60
    )


@pytest.fixture
async def hub_and_dicom(tmp_path):
    move_port = _free_port()
    settings = Settings(
        db=tmp_path / "hub.db",
        dicom_storage=tmp_path / "dicom",
        dicom_stable_seconds=0.3,
        dicom_known_aes={"TOWNA": "org-town-a"},
        dicom_move_destinations={"MOVESCU": f"127.0.0.1:{move_port}"},
    )
    async with open_hub(settings) as hub:
        service = await start_dicom(settings, hub.sink, port=0)
        hub.app.mount("/dicomweb", build_dicomweb_app(settings, hub.sink, service.instances))
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=hub.app), base_url="http://t")
        try:
            yield hub, service, client, move_port
        finally:
            await client.aclose()
            await service.close()


async def _imaging_study(client: httpx.AsyncClient, study_uid: str, instances: int) -> dict:
    async def current():
        r = await client.get(
            "/fhir/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{study_uid}"}
        )
        entries = r.json().get("entry", []) if r.status_code == 200 else []
        if entries and entries[0]["resource"].get("numberOfInstances") == instances:
            return entries[0]["resource"]
        return None

    return await wait_for(current, timeout=10)


async def test_remote_reading_round_trip(hub_and_dicom, tmp_path):
    hub, service, client, move_port = hub_and_dicom
    port = str(service.port)
    sr = {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "identifier": [{"system": "urn:yilian:member:org-town-a:accession", "value": "ACC-E2E"}],
        "subject": {"display": "placeholder"},
    }
    r = await client.post("/fhir/ServiceRequest", json=sr)
    assert r.status_code == 201, r.text
    sr_id = r.json()["id"]

    r = await _run("echoscu", "-aet", "TOWNA", "-aec", "YILIAN", "127.0.0.1", port)
    assert r.returncode == 0, r.stderr

    study, series = generate_uid(), generate_uid()
    generated = [
        make_instance(
            study,
            series,
            instance_number=i,
            charset="GB18030",
            name="Wang^Xiaoming=王^小明",
            accession="ACC-E2E",
        )
        for i in range(3)
    ]
    files = [write(ds, tmp_path / f"gen{i}.dcm") for i, ds in enumerate(generated)]
    r = await _run("storescu", "-aet", "TOWNA", "-aec", "YILIAN", "127.0.0.1", port, *map(str, files))
    assert r.returncode == 0, r.stderr
    for name, option in PYDICOM_FILES.items():
        path = str(get_testdata_file(name))
        r = await _run("storescu", option, "-aet", "TOWNA", "-aec", "YILIAN", "127.0.0.1", port, path)
        assert r.returncode == 0, (name, r.stderr)

    # ImagingStudy over FHIR, with Patient, Endpoint and basedOn resolved
    img = await _imaging_study(client, study, 3)
    assert img["basedOn"] == [{"reference": f"ServiceRequest/{sr_id}"}]
    assert img["series"][0]["modality"]["code"] == "CT"
    patient = (await client.get(f"/fhir/{img['subject']['reference']}")).json()
    assert patient["name"][0]["text"] == "王小明"
    endpoint = (await client.get(f"/fhir/{img['endpoint'][0]['reference']}")).json()
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"
    for name in PYDICOM_FILES:  # every pydicom test file became (part of) an ImagingStudy
        from pydicom import dcmread

        uid = dcmread(get_testdata_file(name), stop_before_pixels=True).StudyInstanceUID
        await _imaging_study(client, uid, len(service.instances.study(uid)))

    # findscu: wildcard on the ideographic name
    r = await _run(
        "findscu", "-S", "-aet", "COUNTY", "-aec", "YILIAN", "127.0.0.1", port,
        "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientName=Wang*", "-k", "StudyInstanceUID",
        "-k", "NumberOfStudyRelatedInstances",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert study in r.stderr + r.stdout

    sent = sorted(dataset_bytes(part10(ds)) for ds in generated)

    # getscu: bytes back equal the bytes sent
    got_dir = tmp_path / "get"
    got_dir.mkdir()
    r = await _run(
        "getscu", "-S", "-aet", "COUNTY", "-aec", "YILIAN", "-od", str(got_dir), "127.0.0.1", port,
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(dataset_bytes(p.read_bytes()) for p in got_dir.iterdir()) == sent

    # movescu: to itself as the configured destination
    moved_dir = tmp_path / "move"
    moved_dir.mkdir()
    r = await _run(
        "movescu", "-S", "-aet", "MOVESCU", "-aec", "YILIAN", "-aem", "MOVESCU", "--port", str(move_port),
        "-od", str(moved_dir), "127.0.0.1", port,
        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert sorted(dataset_bytes(p.read_bytes()) for p in moved_dir.iterdir()) == sent

    # DICOMweb: QIDO, WADO (whole study, as stored), metadata, frames
    r = await client.get("/dicomweb/studies", params={"PatientID": "P001", "StudyInstanceUID": study})
    assert r.status_code == 200
    assert [s["0020000D"]["Value"][0] for s in r.json()] == [study]
    r = await client.get(f"/dicomweb/studies/{study}")
    assert r.status_code == 200
    _, params = multipart.content_type_params(r.headers["content-type"])
    parts = multipart.split(r.content, params["boundary"])
    assert sorted(dataset_bytes(body) for _, body in parts) == sent
    r = await client.get(f"/dicomweb/studies/{study}/series/{series}/instances")
    assert len(r.json()) == 3
    sop = generated[0].SOPInstanceUID
    r = await client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/metadata")
    assert r.json()[0]["00100010"]["Value"][0]["Ideographic"] == "王^小明"
    r = await client.get(f"/dicomweb/studies/{study}/series/{series}/instances/{sop}/frames/1")
    _, params = multipart.content_type_params(r.headers["content-type"])
    [(_, frame)] = multipart.split(r.content, params["boundary"])
    assert frame == generated[0].PixelData
