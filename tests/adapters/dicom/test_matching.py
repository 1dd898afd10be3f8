from __future__ import annotations

import pytest

from adapters.dicom.matching import match_value, matches


@pytest.mark.parametrize(
    ("keyword", "wanted", "actual", "expected"),
    [
        ("PatientName", "", "Wang^Xiaoming", True),
        ("PatientName", "wang*", "Wang^Xiaoming=王^小明", True),
        ("PatientName", "王*", "Wang^Xiaoming=王^小明", True),
        ("PatientName", "王^小明", "Wang^Xiaoming=王^小明", True),
        ("PatientName", "Li*", "Wang^Xiaoming", False),
        ("PatientID", "P0?1", "P001", True),
        ("PatientID", "P0?1", "P0011", False),
        ("StudyDate", "20260101-20261231", "20261123", True),
        ("StudyDate", "-20251231", "20261123", False),
        ("StudyDate", "20261123-", "20261123", True),
        ("StudyTime", "0900-1000", "093000", True),
        ("StudyTime", "1000-", "093000", False),
        ("StudyInstanceUID", "1.2\\1.3", "1.3", True),
        ("StudyInstanceUID", "1.2\\1.3", "1.4", False),
        ("StudyInstanceUID", "1.2*", "1.23", False),  # no wildcards on UIDs
        ("ModalitiesInStudy", "MR", "CT\\MR", True),
        ("ModalitiesInStudy", "US", "CT\\MR", False),
        ("Modality", "CT", "CT", True),
        ("Modality", "ct", "CT", False),
    ],
)
def test_matching_types(keyword, wanted, actual, expected):
    assert match_value(keyword, wanted, actual) is expected


def test_all_criteria_must_match():
    record = {"PatientID": "P1", "Modality": "CT"}
    assert matches(record, {"PatientID": "P1", "Modality": "CT"})
    assert not matches(record, {"PatientID": "P1", "Modality": "MR"})
