"""The FhirError tree: every failure the server can answer, with its HTTP status and issue code.

Raised anywhere below the edges, mapped once per edge: HTTP renders an OperationOutcome, MLLP an AE/AR
ACK with ERR, DICOM a DIMSE status. Tree:

    FhirError (500, exception)
    ├── BadRequest (400, invalid)
    │   ├── InvalidSearch (400, invalid)
    │   └── UnsupportedMediaType (415, not-supported) / NotAcceptable (406, not-supported)
    ├── Unprocessable (422, processing)      validation findings
    ├── NotFound (404, not-found)
    │   └── UnknownResourceType (404, not-supported)
    ├── Forbidden (403, forbidden)           a hub-owned resource (a master Patient)
    ├── Gone (410, deleted)
    ├── Conflict (409, conflict)
    │   └── VersionConflict (409, conflict)
    ├── PreconditionFailed (412, conflict)    stale If-Match, conditional with many matches
    ├── PayloadTooLarge (413, too-costly)
    ├── MethodNotAllowed (405, not-supported)
    ├── NotImplementedOperation (501, not-supported)
    └── StorageError (500, exception)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: severity, code, human text and the FHIRPath of the element."""

    severity: str
    code: str
    diagnostics: str
    expression: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            out["expression"] = list(self.expression)
        return out


class FhirError(Exception):
    """Base of every FHIR-level failure; each subclass fixes its HTTP status and issue code.

    `expression` names the element (FHIRPath) the single default issue is about; pass `issues` when
    there are several findings (validation).
    """

    status: int = 500
    code: str = "exception"

    def __init__(
        self, message: str, issues: list[Issue] | None = None, expression: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.issues: list[Issue] = list(issues or []) or [
            Issue("error", self.code, message, (expression,) if expression else ())
        ]

    def __str__(self) -> str:
        return self.message


class BadRequest(FhirError):
    """The request itself is malformed (syntax, wrong type for URL, id mismatch)."""

    status, code = 400, "invalid"


class InvalidSearch(BadRequest):
    """A search parameter is unknown or its value malformed (strict handling)."""


class Unprocessable(FhirError):
    """The resource parsed but breaks the rules of FHIR or a profile."""

    status, code = 422, "processing"


class NotFound(FhirError):
    status, code = 404, "not-found"


class UnknownResourceType(NotFound):
    code = "not-supported"

    def __init__(self, resource_type: str) -> None:
        super().__init__(f"Unknown resource type '{resource_type}'")


class Unauthorized(FhirError):
    """No valid credentials (a bearer token the hub does not know, or none)."""

    status, code = 401, "login"


class Forbidden(FhirError):
    """The request is understood but this server does not let anyone make it (a hub-owned resource)."""

    status, code = 403, "forbidden"


class Gone(FhirError):
    status, code = 410, "deleted"


class Conflict(FhirError):
    status, code = 409, "conflict"


class PreconditionFailed(FhirError):
    """Stale If-Match, or conditional criteria matching more than one resource."""

    status, code = 412, "conflict"


class PayloadTooLarge(FhirError):
    status, code = 413, "too-costly"


class UnsupportedMediaType(FhirError):
    status, code = 415, "not-supported"


class NotAcceptable(FhirError):
    status, code = 406, "not-supported"


class MethodNotAllowed(FhirError):
    status, code = 405, "not-supported"


class NotImplementedOperation(FhirError):
    status, code = 501, "not-supported"


class StorageError(FhirError):
    """The backend failed; the foreign exception is chained with `raise ... from`."""

    status, code = 500, "exception"
