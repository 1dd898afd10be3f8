"""The consortium's resident-ID rule as a pure function."""

from __future__ import annotations

import datetime as dt

from profiles.consortium import resident_id_issues
from terminology import cn_resident_id


def test_each_wrong_number_is_one_issue_at_its_index() -> None:
    good = cn_resident_id.make("110105", dt.date(1949, 12, 31), 2)
    bad = good[:-1] + ("0" if good[-1] != "0" else "1")
    resource = {
        "resourceType": "Patient",
        "identifier": [
            {"system": cn_resident_id.SYSTEM, "value": good},
            {"system": cn_resident_id.SYSTEM, "value": bad},
            {"system": cn_resident_id.SYSTEM, "value": "12345"},
            {"system": cn_resident_id.SYSTEM},  # no value: the structural checker's business
            "not an object",
        ],
    }
    issues = resident_id_issues(resource)
    assert [i.expression for i in issues] == [
        ("Patient.identifier[1].value",),
        ("Patient.identifier[2].value",),
    ]
    assert all(i.severity == "error" and i.code == "value" for i in issues)
    assert "18 characters" in issues[1].diagnostics


def test_types_without_a_person_identifier_are_left_alone() -> None:
    ident = [{"system": cn_resident_id.SYSTEM, "value": "330183195801303578"}]
    assert resident_id_issues({"resourceType": "Observation", "identifier": ident}) == []
    assert resident_id_issues({"resourceType": "Patient", "identifier": "x"}) == []
    assert resident_id_issues(["Patient"]) == []
    assert len(resident_id_issues({"resourceType": "Patient", "identifier": ident})) == 1
