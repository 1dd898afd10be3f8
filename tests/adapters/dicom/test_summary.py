from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from adapters.dicom.part10 import file_meta
from adapters.dicom.summary import InvalidInstance, KnownMeta, summarize
from tests.adapters.dicom.synthetic import dataset_bytes, make_instance, part10


@pytest.mark.parametrize("charset", ["GB18030", "GBK", "ISO_IR 192"])
def test_chinese_names_survive_each_specific_character_set(charset):
    ds = make_instance(generate_uid(), generate_uid(), name="Zhang^San=张^三=zhang^san", charset=charset)
    s = summarize(part10(ds))
    assert s.patient_name.alphabetic == "Zhang^San"
    assert s.patient_name.ideographic == "张^三"
    assert s.patient_name.phonetic == "zhang^san"
    assert s.referring_physician.ideographic == "李^伟"


def test_gb18030_bytes_are_really_gb18030():
    ds = make_instance(generate_uid(), generate_uid(), name="=王^小明", charset="GB18030")
    data = part10(ds)
    assert "王".encode("gb18030") in data
    assert summarize(data).patient_name.ideographic == "王^小明"


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small.dcm",
        "MR_small_RLE.dcm",
        "JPEG2000.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "MR_small_implicit.dcm",
    ],
)
def test_pydicom_test_files_are_accepted_in_their_transfer_syntax(name):
    path = get_testdata_file(name)
    s = summarize(Path(path).read_bytes())
    assert s.sop_instance_uid and s.study_uid and s.series_uid
    assert s.transfer_syntax


def test_truncated_pixel_data_is_refused():
    with pytest.raises(InvalidInstance, match="truncated"):
        summarize(Path(get_testdata_file("MR_truncated.dcm")).read_bytes())


def test_missing_uids_are_refused():
    ds = make_instance(generate_uid(), generate_uid())
    del ds.StudyInstanceUID
    with pytest.raises(InvalidInstance, match="StudyInstanceUID"):
        summarize(part10(ds))


def test_unsupported_sop_class_is_refused():
    ds = make_instance(generate_uid(), generate_uid())
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.481.1"  # RT Image: not a consortium class
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    with pytest.raises(InvalidInstance, match="SOP class"):
        summarize(part10(ds))


def test_garbage_is_refused():
    with pytest.raises(InvalidInstance):
        summarize(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x00garbage")


def _as_received(data: bytes) -> tuple[bytes, KnownMeta]:
    """The same instance framed as the storage worker frames a C-STORE: our header + the dataset."""
    meta = dcmread(BytesIO(data), stop_before_pixels=True).file_meta
    ts, sop_class = str(meta.TransferSyntaxUID), str(meta.MediaStorageSOPClassUID)
    header = file_meta(sop_class, str(meta.MediaStorageSOPInstanceUID), ts, "MODALITY")
    return header + dataset_bytes(data), KnownMeta(len(header), ts, sop_class)


def _outcome(data: bytes, known: KnownMeta | None = None) -> object:
    try:
        return summarize(data, known)
    except InvalidInstance as exc:
        return f"refused: {exc}"


@pytest.mark.parametrize(
    "source",
    [
        *(
            f"testdata:{n}"
            for n in ("CT_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "MR_small_implicit.dcm")
        ),
        "testdata:MR_truncated.dcm",
        "synthetic:GB18030",
        "synthetic:GBK",
        "synthetic:ISO_IR 192",
        "synthetic:no-study-uid",
    ],
)
def test_known_meta_parse_gives_the_same_answer_as_a_full_parse(source):
    """The worker's fast path (dataset parsed from the known offset) must agree with dcmread."""
    kind, name = source.split(":", 1)
    if kind == "testdata":
        data = Path(get_testdata_file(name)).read_bytes()
    else:
        ds = make_instance(generate_uid(), generate_uid(), name="Zhang^San=张^三", charset="GB18030")
        if name == "no-study-uid":
            del ds.StudyInstanceUID
        else:
            ds.SpecificCharacterSet = name
        data = part10(ds)
    framed, known = _as_received(data)
    assert _outcome(framed, known) == _outcome(framed)
    if kind == "synthetic" and name != "no-study-uid":
        assert _outcome(framed, known).patient_name.ideographic == "张^三"  # type: ignore[attr-defined]
