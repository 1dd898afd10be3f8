"""OperationOutcome construction from the error tree's issues."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fhir_server.errors import Issue


def operation_outcome(issues: Iterable[Issue]) -> dict[str, Any]:
    listed = [i.to_json() for i in issues]
    if not listed:
        listed = [{"severity": "information", "code": "informational", "diagnostics": "All OK"}]
    return {"resourceType": "OperationOutcome", "issue": listed}
