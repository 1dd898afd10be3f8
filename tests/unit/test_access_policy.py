"""The per-request role rules (pure): what each role of client may ask."""

from __future__ import annotations

from fhir_server.api.access import ApiClient, bundle_refusal, own_events_only, refusal

MEMBER = ApiClient("county-his", "member", "XYRMYY")
READER = ApiClient("viewer", "reader", "XYRMYY")
AUDITOR = ApiClient("privacy", "auditor")
ADMIN = ApiClient("ops")


def test_the_role_matrix() -> None:
    assert refusal(ADMIN, "DELETE", ["Organization", "1"]) is None
    assert refusal(MEMBER, "POST", ["Observation"]) is None
    assert refusal(MEMBER, "PUT", ["Task", "1"]) is None
    assert "shared consortium data" in (refusal(MEMBER, "PUT", ["Endpoint", "1"]) or "")
    assert "admin" in (refusal(MEMBER, "POST", ["Patient", "$mpi-split"]) or "")
    assert refusal(MEMBER, "POST", ["Patient", "$merge"]) is None
    assert refusal(MEMBER, "GET", ["AuditEvent"]) is None  # its own events: see own_events_only
    assert (
        own_events_only(MEMBER, "GET", ["AuditEvent"]) == "agent%3Aidentifier=urn%3Ayilian%3Amember%7CXYRMYY"
    )
    assert own_events_only(ADMIN, "GET", ["AuditEvent"]) is None
    assert refusal(MEMBER, "GET", ["AuditEvent", "1"]) is None  # read, then hidden unless its own
    assert "auditor and admin" in (refusal(MEMBER, "GET", ["AuditEvent", "1", "_history"]) or "")
    assert "auditor and admin" in (refusal(MEMBER, "GET", ["AuditEvent", "_history"]) or "")
    assert "auditor and admin" in (refusal(MEMBER, "GET", ["AuditEvent", "1", "_history", "1"]) or "")
    assert "auditor and admin" in (refusal(READER, "GET", ["AuditEvent"]) or "")
    assert refusal(READER, "POST", ["Patient", "1", "$everything"]) is None
    assert refusal(READER, "POST", ["Observation", "_search"]) is None
    assert "do not write" in (refusal(READER, "POST", ["Observation"]) or "")
    assert refusal(AUDITOR, "GET", ["AuditEvent", "9"]) is None
    assert refusal(AUDITOR, "GET", ["metadata"]) is None
    assert "AuditEvents only" in (refusal(AUDITOR, "GET", ["Patient"]) or "")


def test_dicomweb_by_role() -> None:
    assert refusal(READER, "GET", ["studies", "1.2"], dicomweb=True) is None
    assert "do not store" in (refusal(READER, "POST", ["studies"], dicomweb=True) or "")
    assert refusal(MEMBER, "POST", ["studies"], dicomweb=True) is None
    assert refusal(AUDITOR, "GET", ["studies"], dicomweb=True) is not None


def test_a_bundle_is_checked_entry_by_entry() -> None:
    bundle = {
        "entry": [
            {"request": {"method": "POST", "url": "Patient"}},
            {"request": {"method": "PUT", "url": "http://hub/fhir/Location/3?x=1"}},
        ]
    }
    why = bundle_refusal(MEMBER, bundle, "http://hub/fhir")
    assert why is not None and why.startswith("Bundle.entry[1] (PUT Location/3)")
    assert bundle_refusal(ADMIN, bundle, "http://hub/fhir") is None
    assert bundle_refusal(MEMBER, {"entry": bundle["entry"][:1]}, "http://hub/fhir") is None
