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

from dataclasses import dataclass, field


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


@dataclass
class FhirError(Exception):
    """Base of every FHIR-level failure; subclasses fix status and issue code."""

    message: str
    issues: list[Issue] = field(default_factory=list)
    status: int = 500
    code: str = "exception"

    def __post_init__(self) -> None:
        super().__init__(self.message)
        if not self.issues:
            self.issues = [Issue("error", self.code, self.message)]

    def __str__(self) -> str:
        return self.message


class BadRequest(FhirError):
    """The request itself is malformed (syntax, wrong type for URL, id mismatch)."""

    def __init__(
        self, message: str, issues: list[Issue] | None = None, expression: str | None = None
    ) -> None:
        if issues is None and expression:
            issues = [Issue("error", "invalid", message, (expression,))]
        super().__init__(message, list(issues or []), 400, "invalid")


class InvalidSearch(BadRequest):
    """A search parameter is unknown or its value malformed (strict handling)."""


class Unprocessable(FhirError):
    """The resource parsed but breaks the rules of FHIR or a profile (422)."""

    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message, list(issues or []), 422, "processing")


class NotFound(FhirError):
    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message, list(issues or []), 404, "not-found")


class UnknownResourceType(NotFound):
    def __init__(self, resource_type: str) -> None:
        FhirError.__init__(self, f"Unknown resource type '{resource_type}'", [], 404, "not-supported")


class Gone(FhirError):
    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message, list(issues or []), 410, "deleted")


class Conflict(FhirError):
    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message, list(issues or []), 409, "conflict")


class PreconditionFailed(FhirError):
    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message, list(issues or []), 412, "conflict")


class PayloadTooLarge(FhirError):
    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message, list(issues or []), 413, "too-costly")


class UnsupportedMediaType(FhirError):
    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message, list(issues or []), 415, "not-supported")


class NotAcceptable(FhirError):
    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message, list(issues or []), 406, "not-supported")


class MethodNotAllowed(FhirError):
    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message, list(issues or []), 405, "not-supported")


class NotImplementedOperation(FhirError):
    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message, list(issues or []), 501, "not-supported")


class StorageError(FhirError):
    """The backend failed; the foreign exception is chained with `raise ... from`."""

    def __init__(self, message: str, issues: list[Issue] | None = None) -> None:
        super().__init__(message, list(issues or []), 500, "exception")
