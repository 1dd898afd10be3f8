"""The listener over real sockets with pynetdicom as the peer (a recording Sink stands in for the hub)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    ModalityWorklistInformationFind,
    MRImageStorage,
    RTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from adapters.dicom.service import start_dicom
from fhir_server.settings import Settings
from tests.adapters.dicom.conftest import RecordingSink, study_bundles, wait_for
from tests.adapters.dicom.synthetic import dataset_bytes, half_written, make_instance, part10

DCM = "http://dicom.nema.org/resources/ontology/DCM"


def _settings(tmp_path: Path, **kw) -> Settings:
    base = {
        "db": tmp_path / "hub.db",
        "dicom_storage": tmp_path / "dicom",
        "dicom_stable_seconds": 0.3,
        "dicom_known_aes": {"TOWNA": "org-town-a"},
        "dicom_workers": 1,
    }
    return Settings(**(base | kw))


@pytest.fixture(params=[0, 1], ids=["in-process", "worker"])
async def listener(tmp_path, request):
    """The listener with storage served by pynetdicom in-process (0) and by a storage worker process (1)."""
    sink = RecordingSink()
    service = await start_dicom(_settings(tmp_path, dicom_workers=request.param), sink, port=0)
    yield service, sink
    await service.close()


def _scu(*contexts, aet="TOWNA") -> AE:
    ae = AE(ae_title=aet)
    for c in contexts:
        ae.add_requested_context(c)
    return ae


def _store_all(port: int, datasets: list[Dataset], aet="TOWNA", abort=False) -> list[int]:
    ae = _scu(CTImageStorage, MRImageStorage, aet=aet)
    assoc = ae.associate("127.0.0.1", port, ae_title="YILIAN")
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(ds).Status) for ds in datasets]
    assoc.abort() if abort else assoc.release()
    return statuses


async def test_echo_and_store_publish_one_imaging_study(listener):
    service, sink = listener
    ae = _scu(Verification)
    assoc = await asyncio.to_thread(ae.associate, "127.0.0.1", service.port, ae_title="YILIAN")
    assert int((await asyncio.to_thread(assoc.send_c_echo)).Status) == 0
    await asyncio.to_thread(assoc.release)

    study, s1, s2 = generate_uid(), generate_uid(), generate_uid()
    sent = [make_instance(study, s1, instance_number=i) for i in range(3)]
    sent.append(make_instance(study, s2, modality="MR", series_number=2))
    assert await asyncio.to_thread(_store_all, service.port, sent) == [0, 0, 0, 0]
    studies = await wait_for(lambda: study_bundles(sink, study))
    assert studies[-1]["numberOfInstances"] == 4 and studies[-1]["numberOfSeries"] == 2
    assert service.instances.get(sent[0].SOPInstanceUID) is not None

    # a late series updates the same study (same conditional URL, now 5 instances)
    late = make_instance(study, generate_uid(), series_number=3)
    assert await asyncio.to_thread(_store_all, service.port, [late]) == [0]
    final = await wait_for(lambda: [s for s in study_bundles(sink, study) if s["numberOfInstances"] == 5])
    assert final[-1]["numberOfSeries"] == 3
    await wait_for(lambda: service.instances.pending_studies() == {})  # marked published after submit


async def test_bad_instances_fail_alone_and_listener_keeps_serving(listener):
    service, _sink = listener
    study, series = generate_uid(), generate_uid()
    good = make_instance(study, series)
    no_study = make_instance(study, series)
    del no_study.StudyInstanceUID
    truncated = dcmread(get_testdata_file("MR_truncated.dcm"))
    after = make_instance(study, series, instance_number=2)
    statuses = await asyncio.to_thread(_store_all, service.port, [good, no_study, truncated, after])
    assert statuses[0] == 0 and statuses[3] == 0
    assert statuses[1] == 0xC000 and statuses[2] == 0xC000
    assert service.instances.get(no_study.SOPInstanceUID) is None
    assert service.instances.get(truncated.SOPInstanceUID) is None
    assert len(service.instances.study(study)) == 2


async def test_unsupported_sop_class_context_is_rejected(listener):
    service, _ = listener
    ae = _scu(RTImageStorage, CTImageStorage)
    assoc = await asyncio.to_thread(ae.associate, "127.0.0.1", service.port, ae_title="YILIAN")
    assert assoc.is_established
    accepted = {c.abstract_syntax for c in assoc.accepted_contexts}
    rejected = {c.abstract_syntax for c in assoc.rejected_contexts}
    await asyncio.to_thread(assoc.release)
    assert CTImageStorage in accepted and RTImageStorage in rejected


async def test_abort_mid_association_keeps_what_was_complete(listener):
    service, sink = listener
    study = generate_uid()
    ds = make_instance(study, generate_uid())
    assert await asyncio.to_thread(_store_all, service.port, [ds], "TOWNA", True) == [0]
    await wait_for(lambda: study_bundles(sink, study))
    ae = _scu(Verification)
    assoc = await asyncio.to_thread(ae.associate, "127.0.0.1", service.port, ae_title="YILIAN")
    assert int((await asyncio.to_thread(assoc.send_c_echo)).Status) == 0
    await asyncio.to_thread(assoc.release)


async def test_unknown_callers_can_be_refused(tmp_path):
    settings = _settings(tmp_path, dicom_refuse_unknown_callers=True)
    service = await start_dicom(settings, RecordingSink(), port=0)
    try:
        stranger_ae = _scu(Verification, aet="STRANGER")
        stranger = await asyncio.to_thread(stranger_ae.associate, "127.0.0.1", service.port)
        assert stranger.is_rejected
        member = await asyncio.to_thread(_scu(Verification, aet="TOWNA").associate, "127.0.0.1", service.port)
        assert member.is_established
        await asyncio.to_thread(member.release)
    finally:
        await service.close()


def _find(port: int, model, query: Dataset) -> list[Dataset]:
    ae = _scu(model)
    assoc = ae.associate("127.0.0.1", port, ae_title="YILIAN")
    out = [ident for status, ident in assoc.send_c_find(query, model) if status and status.Status == 0xFF00]
    assoc.release()
    return out


async def test_c_get_returns_the_bytes_received(listener):
    service, _ = listener
    study = generate_uid()
    sent = [make_instance(study, generate_uid(), instance_number=i) for i in range(2)]
    await asyncio.to_thread(_store_all, service.port, sent)
    received: list[bytes] = []

    def on_store(event):
        received.append(event.encoded_dataset(include_meta=False))
        return 0

    def get() -> int:
        from pynetdicom import build_role

        ae = _scu(StudyRootQueryRetrieveInformationModelGet, CTImageStorage)
        assoc = ae.associate(
            "127.0.0.1",
            service.port,
            ae_title="YILIAN",
            ext_neg=[build_role(CTImageStorage, scp_role=True)],
            evt_handlers=[(evt.EVT_C_STORE, on_store)],
        )
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.StudyInstanceUID = study
        final = [s.Status for s, _ in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet)][-1]
        assoc.release()
        return int(final)

    assert await asyncio.to_thread(get) == 0
    assert sorted(received) == sorted(dataset_bytes(part10(d)) for d in sent)


async def test_c_move_to_configured_destination(tmp_path):
    received: list[bytes] = []

    def on_store(event):
        received.append(event.encoded_dataset(include_meta=False))
        return 0

    dest = AE(ae_title="VIEWER")
    dest.add_supported_context(CTImageStorage)
    server = dest.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    port = server.server_address[1]
    settings = _settings(tmp_path, dicom_move_destinations={"VIEWER": f"127.0.0.1:{port}"})
    service = await start_dicom(settings, RecordingSink(), port=0)
    try:
        study = generate_uid()
        sent = [make_instance(study, generate_uid(), instance_number=i) for i in range(3)]
        await asyncio.to_thread(_store_all, service.port, sent)

        def move(destination: str) -> int:
            ae = _scu(StudyRootQueryRetrieveInformationModelMove)
            assoc = ae.associate("127.0.0.1", service.port, ae_title="YILIAN")
            q = Dataset()
            q.QueryRetrieveLevel = "STUDY"
            q.StudyInstanceUID = study
            model = StudyRootQueryRetrieveInformationModelMove
            final = [s.Status for s, _ in assoc.send_c_move(q, destination, model)]
            assoc.release()
            return int(final[-1])

        assert await asyncio.to_thread(move, "NOWHERE") == 0xA801
        assert await asyncio.to_thread(move, "VIEWER") == 0
        assert sorted(received) == sorted(dataset_bytes(part10(d)) for d in sent)
    finally:
        await service.close()
        server.shutdown()


async def test_modality_worklist_lists_scheduled_imaging_requests(tmp_path):
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": "urn:x", "value": "P77"}],
        "name": [
            {"extension": [{"url": "x", "valueCode": "IDE"}], "family": "王", "given": ["小明"]},
            {"family": "Wang", "given": ["Xiaoming"]},
        ],
        "gender": "male",
        "birthDate": "1960-01-02",
    }
    ct = {
        "resourceType": "ServiceRequest",
        "id": "sr-ct",
        "status": "active",
        "intent": "order",
        "identifier": [{"type": {"coding": [{"code": "ACSN"}]}, "value": "ACC9"}],
        "category": [{"coding": [{"system": "http://snomed.info/sct", "code": "363679005"}]}],
        "code": {"coding": [{"system": DCM, "code": "CT"}], "text": "胸部CT"},
        "subject": {"reference": "Patient/p1"},
        "performer": [{"reference": "Organization/org-town-a"}],
        "occurrenceDateTime": "2026-11-24T08:30:00+08:00",
    }
    elsewhere = ct | {"id": "sr-other", "performer": [{"reference": "Organization/org-county"}]}
    lab = ct | {"id": "sr-lab", "category": [], "code": {"text": "CBC"}}
    done = ct | {"id": "sr-done", "status": "completed"}
    town_org = {  # as the HL7 feed creates it: server id, member code as identifier
        "resourceType": "Organization",
        "id": "7f3a",
        "identifier": [{"system": "urn:yilian:member", "value": "org-town-a"}],
    }
    from_hl7 = ct | {
        "id": "sr-hl7",
        "identifier": [{"type": {"coding": [{"code": "ACSN"}]}, "value": "ACC10"}],
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "CT"}]}],
        "code": {"text": "头颅CT平扫"},
        "performer": [{"reference": "Organization/7f3a"}],
    }
    sink = RecordingSink([patient, ct, elsewhere, lab, done, town_org, from_hl7])
    service = await start_dicom(_settings(tmp_path), sink, port=0)
    try:
        q = Dataset()
        q.PatientName = ""
        q.PatientID = ""
        q.AccessionNumber = ""
        sps = Dataset()
        sps.Modality = "CT"
        sps.ScheduledStationAETitle = ""
        sps.ScheduledProcedureStepStartDate = "20261124"
        q.ScheduledProcedureStepSequence = [sps]
        found = await asyncio.to_thread(_find, service.port, ModalityWorklistInformationFind, q)
        assert sorted(f.AccessionNumber for f in found) == ["ACC10", "ACC9"]
        item = next(f for f in found if f.AccessionNumber == "ACC9")
        assert item.PatientID == "P77"
        assert item.PatientName.ideographic == "王^小明"
        assert item.ScheduledProcedureStepSequence[0].ScheduledStationAETitle == "TOWNA"
    finally:
        await service.close()


def _raw_partial_store(port: int, data: bytes, abort: bool) -> None:
    """Associate, send a C-STORE command and half its dataset, then abort or just drop the connection."""
    import socket
    import struct

    from tests.adapters.dicom.test_storage_scp import CT, _rq

    def elem(element: int, value: bytes) -> bytes:
        value += b"\x00" * (len(value) % 2)
        return struct.pack("<HHI", 0, element, len(value)) + value

    def pdata(control: int, payload: bytes) -> bytes:
        pdv = struct.pack(">IBB", len(payload) + 2, 1, control) + payload
        return struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv

    sop = b"1.2.3.4.5.6.7.8.9"
    body = elem(0x0002, CT.encode()) + elem(0x0100, struct.pack("<H", 1)) + elem(0x0110, struct.pack("<H", 1))
    body += elem(0x0700, struct.pack("<H", 0)) + elem(0x0800, struct.pack("<H", 0)) + elem(0x1000, sop)
    command = elem(0x0000, struct.pack("<I", len(body))) + body
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(_rq([(CT, ["1.2.840.10008.1.2.1"])]))
        header = s.recv(6)
        assert header[0] == 0x02
        s.recv(int.from_bytes(header[2:6], "big"), socket.MSG_WAITALL)
        s.sendall(pdata(0x03, command) + pdata(0x00, data[: len(data) // 2]))
        if abort:
            s.sendall(struct.pack(">BBI", 0x07, 0, 4) + b"\x00\x00\x00\x00")


@pytest.mark.parametrize("abort", [True, False], ids=["A-ABORT", "connection-dropped"])
async def test_peer_gone_mid_dataset_stores_nothing_and_listener_keeps_serving(listener, abort):
    service, _ = listener
    ds = make_instance(generate_uid(), generate_uid(), sop_uid="1.2.3.4.5.6.7.8.9")
    await asyncio.to_thread(_raw_partial_store, service.port, dataset_bytes(part10(ds)), abort)
    await asyncio.sleep(0.3)
    assert service.instances.get("1.2.3.4.5.6.7.8.9") is None
    assert half_written(service.instances.root / "tmp") == []
    assert await asyncio.to_thread(_store_all, service.port, [ds]) == [0]
    assert service.instances.get("1.2.3.4.5.6.7.8.9") is not None


async def test_duplicate_sop_instance_is_kept_as_first_received(listener):
    service, _ = listener
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    first = make_instance(study, series, sop_uid=sop, instance_number=1)
    second = make_instance(study, series, sop_uid=sop, instance_number=2)
    assert await asyncio.to_thread(_store_all, service.port, [first, second]) == [0, 0]
    stored = service.instances.read_bytes(sop)
    assert stored is not None and dataset_bytes(stored) == dataset_bytes(part10(first))
    assert len(service.instances.study(study)) == 1


async def test_unwritable_store_fails_the_instance_not_the_listener(listener):
    """The write path failing (disk full, EIO; here: the tmp directory replaced by a file) gives 0xA700."""
    import shutil

    service, _ = listener
    tmp = service.instances.root / "tmp"
    shutil.rmtree(tmp)
    tmp.write_bytes(b"not a directory")
    study = generate_uid()
    try:
        statuses = await asyncio.to_thread(_store_all, service.port, [make_instance(study, generate_uid())])
        assert statuses == [0xA700]
        assert service.instances.study(study) == []
    finally:
        tmp.unlink()
        tmp.mkdir()
    assert await asyncio.to_thread(_store_all, service.port, [make_instance(study, generate_uid())]) == [0]


async def test_a_dead_storage_worker_is_replaced(tmp_path):
    import os
    import signal

    service = await start_dicom(_settings(tmp_path), RecordingSink(), port=0)
    try:
        assert service._pool is not None
        victim = service._pool._workers[0].process
        os.kill(victim.pid, signal.SIGKILL)
        await asyncio.to_thread(victim.wait)
        study = generate_uid()
        statuses = await asyncio.to_thread(_store_all, service.port, [make_instance(study, generate_uid())])
        assert statuses == [0]
        assert service._pool._workers[0].process.pid != victim.pid
        assert len(service.instances.study(study)) == 1
    finally:
        await service.close()


def _worker_processes() -> list[str]:
    """Child processes of this test process that are DICOM workers (read from /proc)."""
    children = [
        pid for task in Path("/proc/self/task").iterdir() for pid in (task / "children").read_text().split()
    ]
    return [pid for pid in children if b"adapters.dicom.workers" in Path(f"/proc/{pid}/cmdline").read_bytes()]


async def test_a_taken_port_is_one_clear_error_and_nothing_left_running(tmp_path: Path) -> None:
    import socket

    from adapters.base import ListenerError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ListenerError, match=f"DICOM cannot listen on 127.0.0.1:{port}: Address already"):
            await start_dicom(_settings(tmp_path, dicom_workers=1), RecordingSink(), port=port)
    assert _worker_processes() == []  # the worker pool was closed again
    service = await start_dicom(_settings(tmp_path), RecordingSink(), port=0)  # the store is reusable
    await service.close()
