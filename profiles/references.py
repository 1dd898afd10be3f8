"""Syntax of `Reference.reference` values (R4 §2.3.0.7 "Literal references").

Accepted forms: local `#id` (contained), relative `Type/id` and `Type/id/_history/vid`, conditional
`Type?query` (resolved by the transaction processor before storage), `urn:uuid:` and `urn:oid:` (Bundle
fullUrls), and absolute URLs. The resource type part must name a real R4 resource type and, where the
element restricts targets (`Patient.generalPractitioner` → Organization | Practitioner |
PractitionerRole), one of those.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}", re.ASCII)
_RELATIVE = re.compile(
    r"([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?", re.ASCII
)
_CONDITIONAL = re.compile(r"([A-Z][A-Za-z]+)\?(\S+)", re.ASCII)
_UUID = re.compile(
    r"urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII
)
_OID = re.compile(r"urn:oid:[0-2](\.(0|[1-9][0-9]*))+", re.ASCII)
_ABSOLUTE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:\S+", re.ASCII)
_TAIL_TYPE = re.compile(
    r"/([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?$", re.ASCII
)


@dataclass(frozen=True)
class ReferenceSyntax:
    """Checks reference strings against the set of known resource types."""

    resource_types: frozenset[str]

    def target_type(self, reference: str) -> str | None:
        """The resource type a relative, conditional or RESTful absolute reference names, if any."""
        match = _RELATIVE.fullmatch(reference) or _CONDITIONAL.fullmatch(reference)
        if match:
            return match.group(1)
        tail = _TAIL_TYPE.search(reference)
        if tail and tail.group(1) in self.resource_types and "://" in reference:
            return tail.group(1)
        return None

    def problem(self, reference: str, targets: frozenset[str] | None) -> str | None:
        """None when the reference is well formed (and of an allowed type), else a human message."""
        if reference.startswith("#"):
            return None if reference == "#" or ID_PATTERN.fullmatch(reference[1:]) else "bad local reference"
        if reference.startswith("urn:uuid:"):
            return None if _UUID.fullmatch(reference) else f"'{reference}' is not a valid urn:uuid"
        if reference.startswith("urn:oid:"):
            return None if _OID.fullmatch(reference) else f"'{reference}' is not a valid urn:oid"
        relative = _RELATIVE.fullmatch(reference) or _CONDITIONAL.fullmatch(reference)
        if relative is None:
            if "://" in reference and _ABSOLUTE.fullmatch(reference):
                return self._target_problem(self.target_type(reference), targets)
            return (
                f"'{reference}' is not a valid reference "
                "(expected Type/id, Type/id/_history/vid, Type?query, #id, urn:uuid:, urn:oid: "
                "or an absolute URL)"
            )
        type_name = relative.group(1)
        if type_name not in self.resource_types:
            return f"'{type_name}' in reference '{reference}' is not a FHIR R4 resource type"
        return self._target_problem(type_name, targets)

    @staticmethod
    def _target_problem(type_name: str | None, targets: frozenset[str] | None) -> str | None:
        if type_name is None or targets is None or type_name in targets:
            return None
        allowed = " | ".join(sorted(targets))
        return f"a reference to {type_name} is not allowed here (allowed: {allowed})"
