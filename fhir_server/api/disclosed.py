"""Which persons a response disclosed, for its AuditEvent: every patient a search returned, not only
the query asked (the question "who saw this patient" must find a search that listed her).

A route notes the resources it answers with (`note`); the access log names each patient once, as an
`AuditEvent.entity`. A resource's patient is read from the elements that name it in the Patient
compartment's commonest types (`subject`, `patient`, `for`, `beneficiary`), a Patient is itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.requests import Request

PATIENTS_SCOPE_KEY = "yilian.disclosed-patients"
PATIENT_ELEMENTS = ("subject", "patient", "for", "beneficiary")
MAX_NAMED = 1000
"""At most this many patients are named in one AuditEvent (a page holds at most 1,000 entries)."""


def patient_of(resource: Any) -> str | None:
    if not isinstance(resource, dict):
        return None
    if resource.get("resourceType") == "Patient":
        rid = resource.get("id")
        return f"Patient/{rid}" if isinstance(rid, str) else None
    for key in PATIENT_ELEMENTS:
        value = resource.get(key)
        ref = value.get("reference") if isinstance(value, dict) else None
        if isinstance(ref, str) and ref.startswith("Patient/"):
            return ref
    return None


def note(request: Request, resources: Iterable[Any]) -> None:
    """Remember the patients of `resources` (bodies) for this request's AuditEvent."""
    found: dict[str, None] = request.scope.setdefault(PATIENTS_SCOPE_KEY, {})
    for resource in resources:
        if len(found) >= MAX_NAMED:
            return
        ref = patient_of(resource)
        if ref is not None:
            found[ref] = None


def note_bundle(request: Request, bundle: dict[str, Any]) -> None:
    note(request, (e.get("resource") for e in bundle.get("entry") or () if isinstance(e, dict)))


def disclosed(scope: Any) -> tuple[str, ...]:
    return tuple(scope.get(PATIENTS_SCOPE_KEY) or ())
