"""Survivorship: the master's data from its sources, whatever order they come in."""

from __future__ import annotations

import itertools

from fhir_server.interactions.survivorship import master_body
from fhir_server.model.person import is_master

RESIDENT = "urn:oid:2.16.156.10011.1.3"


def source(rid: str, updated: str, **elements: object) -> dict[str, object]:
    return {"resourceType": "Patient", "id": rid, "meta": {"lastUpdated": updated}, **elements}


SOURCES = [
    source(
        "a",
        "2026-01-01T00:00:00.000Z",
        identifier=[{"system": "urn:m:a", "value": "1"}, {"system": RESIDENT, "value": "33010219800512123x"}],
        deceasedDateTime="2025-12-31",
        birthDate="1980-05-12",
        telecom=[{"system": "phone", "value": "1"}],
    ),
    source(
        "b",
        "2026-02-01T00:00:00.000Z",
        identifier=[{"system": RESIDENT, "value": "33010219800512123X"}, {"system": "urn:m:b", "value": "2"}],
        deceasedBoolean=False,
        telecom=[],
        active=False,
    ),
]


def test_newest_non_empty_value_per_element_and_union_of_identifiers() -> None:
    for order in itertools.permutations(SOURCES):
        master = master_body("m", order)
        assert is_master(master) and master["id"] == "m"
        assert [(i["system"], i["value"]) for i in master["identifier"]] == [
            (RESIDENT, "33010219800512123X"),  # once, as the newest source wrote it
            ("urn:m:b", "2"),
            ("urn:m:a", "1"),
        ]
        assert master["birthDate"] == "1980-05-12"  # only the older source has it
        assert master["telecom"] == [{"system": "phone", "value": "1"}]  # the newer one's is empty
        assert master["deceasedBoolean"] is False and "deceasedDateTime" not in master  # one choice, whole
        assert master["active"] is True  # one source is active
        assert master["link"] == [
            {"other": {"reference": "Patient/a"}, "type": "seealso"},
            {"other": {"reference": "Patient/b"}, "type": "seealso"},
        ]


def test_member_specific_elements_stay_on_the_sources() -> None:
    master = master_body("m", [source("a", "x", managingOrganization={"reference": "Organization/1"})])
    assert "managingOrganization" not in master
