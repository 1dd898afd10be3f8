"""Sparse updates: v2's "absent = no change, \"\" = delete" applied to a stored FHIR resource."""

from __future__ import annotations

from fhir_server.model.sparse_update import SparseUpdate, apply, from_request, request_extensions

CURRENT = {
    "resourceType": "Patient",
    "id": "p1",
    "meta": {"versionId": "3"},
    "identifier": [
        {"system": "urn:mrn", "value": "1"},
        {"system": "urn:oid:2.16.156.10011.1.3", "value": "X"},
    ],
    "name": [{"text": "张三"}],
    "birthDate": "1980-05-12",
    "_birthDate": {"extension": [{"url": "birthTime"}]},
    "deceasedDateTime": "2025-01-01",
    "telecom": [{"value": "1"}],
}


def test_sent_replaces_absent_stays_cleared_goes() -> None:
    body = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:mrn", "value": "1"}],
        "name": [{"text": "张叁"}],
        "birthDate": "1980-05-13",
        "deceasedBoolean": False,
    }
    merged = apply(CURRENT, body, SparseUpdate(frozenset({"telecom"})))
    assert merged["name"] == [{"text": "张叁"}]
    assert merged["identifier"] == [
        {"system": "urn:mrn", "value": "1"},
        {"system": "urn:oid:2.16.156.10011.1.3", "value": "X"},  # another system: kept
    ]
    assert merged["birthDate"] == "1980-05-13" and "_birthDate" not in merged  # the old time went with it
    assert merged["deceasedBoolean"] is False and "deceasedDateTime" not in merged  # one choice at a time
    assert "telecom" not in merged and "meta" not in merged


def test_the_request_marks_it_and_anything_else_is_a_whole_update() -> None:
    request = {"method": "PUT", "url": "Patient?x", "extension": request_extensions(["telecom", "address"])}
    assert from_request(request) == SparseUpdate(frozenset({"telecom", "address"}))
    assert from_request({"method": "PUT"}) is None
    assert from_request({"extension": [{"url": "other", "valueBoolean": True}]}) is None
    assert from_request({"extension": "junk"}) is None
