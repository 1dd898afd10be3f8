"""DICOM test data generated with pydicom (no binary fixtures): small CT/MR/DX instances, any charset."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "DX": "1.2.840.10008.5.1.4.1.1.1.1",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
}


def make_instance(
    study_uid: str,
    series_uid: str,
    *,
    sop_uid: str | None = None,
    modality: str = "CT",
    patient_id: str = "P001",
    issuer: str | None = "TOWNSHIP-A",
    name: str = "Wang^Xiaoming=王^小明=wang^xiaoming",
    charset: str = "ISO_IR 192",
    accession: str = "ACC001",
    series_number: int = 1,
    instance_number: int = 1,
    body_part: str = "CHEST",
    size: int = 16,
    implicit: bool = False,
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = SOP_CLASSES[modality]
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientName = name
    ds.PatientID = patient_id
    if issuer:
        ds.IssuerOfPatientID = issuer
    ds.PatientBirthDate = "19600102"
    ds.PatientSex = "M"
    ds.StudyDate = "20261123"
    ds.StudyTime = "093000"
    ds.SeriesDate = "20261123"
    ds.SeriesTime = "093100"
    ds.AccessionNumber = accession
    ds.StudyID = "1"
    ds.StudyDescription = "Chest CT"
    ds.ReferringPhysicianName = "Li^Wei=李^伟"
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.BodyPartExamined = body_part
    ds.Rows = size
    ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((i * 7) % 251 for i in range(size * size * 2))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def part10(ds: Dataset) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def write(ds: Dataset, path: Path) -> Path:
    path.write_bytes(part10(ds))
    return path


def dataset_bytes(data: bytes) -> bytes:
    """The encoded dataset after the File Meta Information (what travels over DIMSE)."""
    from pydicom.filereader import (
        _read_file_meta_info,  # noqa: PLC2701 - test-only
        read_preamble,
    )

    fp = BytesIO(data)
    read_preamble(fp, False)
    _read_file_meta_info(fp)
    return data[fp.tell() :]


def half_written(tmp_dir: Path) -> list[Path]:
    """Files in the store's tmp directory holding any bytes. The store keeps empty tmp files created
    ahead for the next instance; a file with content there would be an instance left half-written."""
    return [p for p in tmp_dir.iterdir() if p.stat().st_size > 0]
