"""What a member's clients see of patient data: the persons it has a care relationship with, decided
inside each query, as if nothing else existed.

A person's resources are the Patient compartment's types, Patient and Task (not AuditEvent: a member
reads the events of its own clients, `api/access.py`, whoever they concern). A member sees them when the
person's care-relationship CareTeam (`care_team.py`) lists the member:
- a search gets one more filter, an ordinary reverse chain every backend runs inside its query
  (`Patient?_has:CareTeam:patient:_security=urn:yilian:care:member|<code>`, and for other types
  the same behind their patient parameter, `Observation?patient:Patient._has:...`), so paging, `total`,
  `_sort` and cursors are the query's own, never a page filtered afterwards;
- a read by id, `_history` of an instance, `$everything`, and what `_include`/`_revinclude` add are
  checked on the resources themselves (`sees`, `visible`): the patients their patient parameter names,
  and those patients' CareTeams, read by id. What a member does not see answers as absent (404).
Everything else (Organization, Practitioner, Endpoint, terminology ...) is shared by all members.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

from fhir_server.errors import Forbidden
from fhir_server.model.care import ACCESS_SYSTEM, care_team_id, member_codes
from fhir_server.search.ast import Filter, SearchQuery
from fhir_server.search.compartments import compartment_params
from fhir_server.search.extract import reference_value
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.protocol import ResourceStore, StoredVersion

NOT_PERSON_DATA = frozenset({"AuditEvent"})
PATIENT_PARAMS = ("patient", "subject")
"""The parameter that names a resource's patient, by preference; a type with neither uses its first
Patient compartment parameter (Group: member, Schedule: actor)."""


@cache
def person_types() -> frozenset[str]:
    """The types whose resources belong to a person (a member sees those of its persons only)."""
    return (frozenset(compartment_params("Patient")) | {"Patient", "Task"}) - NOT_PERSON_DATA


def patient_param(registry: SearchRegistry, resource_type: str) -> str:
    for code in PATIENT_PARAMS:
        if registry.get(resource_type, code) is not None:
            return code
    return compartment_params("Patient")[resource_type][0]


@dataclass(frozen=True, slots=True)
class MemberView:
    """The view of patient data a member's clients (`member` and `reader` roles) have."""

    member: str

    def covers(self, resource_type: str | None) -> bool:
        """Whether resources of `resource_type` are seen per person (None: a system-wide request)."""
        return resource_type is None or resource_type in person_types()

    def search_filter(self, registry: SearchRegistry, resource_type: str) -> Filter:
        """The filter that keeps a search of `resource_type` to this member's persons."""

        def build() -> Filter:
            care = "_has:CareTeam:patient:_security"
            key = (
                care
                if resource_type == "Patient"
                else f"{patient_param(registry, resource_type)}:Patient.{care}"
            )
            query = parse_search(
                resource_type, [(key, f"{ACCESS_SYSTEM}|{self.member}")], registry, strict=True
            )
            return query.filters[0]

        found: Filter = registry.memo(("member-view", self.member, resource_type), build)
        return found

    def restrict(self, registry: SearchRegistry, query: SearchQuery) -> SearchQuery:
        """`query` with this member's filter, for a type search; a system-wide search (no type, or
        several in `_type`) is refused when it reaches patient data, as its filter differs per type."""
        types = query.types or ((query.resource_type,) if query.resource_type else ())
        covered = [t for t in types if self.covers(t)] if types else [None]
        if not covered:
            return query
        if len(types) != 1 or covered[0] is None:
            raise Forbidden(
                "A member client searches patient data one type at a time "
                f"(GET [base]/<type>?...); this search spans {', '.join(types) or 'every type'}",
                expression="_type",
            )
        return replace(query, filters=(*query.filters, self.search_filter(registry, types[0])))

    async def visible(
        self, store: ResourceStore, registry: SearchRegistry, versions: Sequence[StoredVersion]
    ) -> list[StoredVersion]:
        """The versions of `versions` this member sees (their order kept)."""
        wanted: dict[int, set[str]] = {}
        for i, version in enumerate(versions):
            if self.covers(version.resource_type):
                wanted[i] = _patients_of(registry, version)
        teams = sorted({care_team_id(p) for patients in wanted.values() for p in patients})
        found = await store.current_many([("CareTeam", team) for team in teams])
        listing = {team.id for team in found if self.member in member_codes(team.body)}
        return [
            v
            for i, v in enumerate(versions)
            if i not in wanted or any(care_team_id(p) in listing for p in wanted[i])
        ]

    async def sees(self, store: ResourceStore, registry: SearchRegistry, version: StoredVersion) -> bool:
        return bool(await self.visible(store, registry, [version]))


def _patients_of(registry: SearchRegistry, version: StoredVersion) -> set[str]:
    """The ids of the Patients a resource belongs to, read as its patient parameter is indexed."""
    body: Any = version.body
    if body is None:
        return set()
    if version.resource_type == "Patient":
        return {version.id}
    code = patient_param(registry, version.resource_type)
    out: set[str] = set()
    for cp in registry.compiled(version.resource_type):
        if cp.param.code == code:
            for node in cp.extract(body):
                ref = reference_value(node[0])
                if ref is not None and ref[0] == "Patient" and ref[1] and not ref[2]:
                    out.add(ref[1])
    return out
