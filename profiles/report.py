"""Validate every resource of a FHIR package and summarise what was refused and why.

Used for the official R4 examples (how many would the hub accept?) and, later, for consortium
packages before they are loaded. Refusals are grouped by rule (issue code plus the message with the
instance-specific values removed), so a report reads as a short list of reasons.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from fhir_server.errors import Issue
from fhir_server.model.definitions import JsonObject
from profiles.validator import Validator, is_error

_QUOTED = re.compile(r"'[^']*'")


@dataclass(frozen=True)
class Refusal:
    resource_type: str
    id: str
    errors: tuple[Issue, ...]

    def describe(self) -> str:
        first = self.errors[0]
        where = first.expression[0] if first.expression else ""
        more = f" (+{len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
        return f"{self.resource_type}/{self.id}: {where}: {first.diagnostics}{more}"


@dataclass
class PackageReport:
    total: int = 0
    accepted: int = 0
    refusals: list[Refusal] = field(default_factory=list)

    @property
    def categories(self) -> Counter[str]:
        """How many refused resources break each rule (a resource counts once per rule)."""
        counts: Counter[str] = Counter()
        for refusal in self.refusals:
            counts.update({category(issue) for issue in refusal.errors})
        return counts

    def lines(self) -> list[str]:
        out = [f"accepted {self.accepted} of {self.total}; refused {len(self.refusals)}"]
        out += [f"  {n:4d} × {reason}" for reason, n in self.categories.most_common()]
        out += [f"  - {refusal.describe()}" for refusal in self.refusals]
        return out


def category(issue: Issue) -> str:
    """The rule an issue stands for: its code and message without instance values."""
    return f"{issue.code}: {_QUOTED.sub('…', issue.diagnostics)}"


def validate_all(validator: Validator, resources: Iterable[JsonObject]) -> PackageReport:
    report = PackageReport()
    for resource in resources:
        report.total += 1
        errors = tuple(issue for issue in validator.validate(resource) if is_error(issue))
        if errors:
            report.refusals.append(
                Refusal(str(resource.get("resourceType")), str(resource.get("id")), errors)
            )
        else:
            report.accepted += 1
    return report
