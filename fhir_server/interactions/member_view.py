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
from fhir_server.interactions.events import ResourceChanged
from fhir_server.interactions.members import MemberCodes, organization
from fhir_server.model.care import ACCESS_SYSTEM, care_team_id, member_codes
from fhir_server.search.ast import Filter, SearchQuery
from fhir_server.search.compartments import compartment_params
from fhir_server.search.extract import reference_value
from fhir_server.search.parse import parse_search
from fhir_server.search.registry import SearchRegistry
from fhir_server.storage.protocol import ResourceStore, StoredVersion, WriteTransaction

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
                wanted[i] = _patients_of(registry, version.resource_type, version.id, version.body)
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

    async def check_writes(
        self, registry: SearchRegistry, tx: WriteTransaction, changes: list[ResourceChanged]
    ) -> None:
        """Raise `Forbidden` unless this member may make every change its client asked for in the section
        (run before the section's care relationships are settled, so they are the ones it had):
        - a Patient record is its own (`managingOrganization` is its member), before and after;
        - a Task it changes or deletes names its member as requester or owner;
        - any other resource of a person (created, changed or deleted) is of a person it sees, or of a
          Patient record of its own written in the same section.
        What the hub writes of its own accord (masters, CareTeams, Provenance, a merge's re-pointing) is
        not asked of it."""
        members = MemberCodes(tx)
        for change in changes:
            if change.by_hub or change.reason is not None or not self.covers(change.resource_type):
                continue
            where = f"{change.resource_type}/{change.id}"
            if change.resource_type == "Patient":
                for body, what in ((change.previous, "is another member's record"), (change.resource, None)):
                    if body is not None and not await self._owns_patient(members, body):
                        raise Forbidden(
                            f"{where} {what or 'names another member as managingOrganization'}: a member "
                            "writes its own Patient records only",
                            expression="Patient.managingOrganization",
                        )
                continue
            if change.resource_type == "Task" and change.previous is not None:
                named = [
                    r for key in ("requester", "owner") if isinstance(r := change.previous.get(key), dict)
                ]
                orgs = [org for r in named if (org := organization(r)) is not None]
                codes = [await members.code(org) for org in orgs]
                if self.member not in codes:
                    raise Forbidden(
                        f"{where}: a member changes the Tasks it requested or owns", expression="Task.owner"
                    )
            for body in (change.previous, change.resource):
                for patient in _patients_of(registry, change.resource_type, change.id, body):
                    if not await self._may_write_for(tx, members, patient):
                        raise Forbidden(
                            f"{where} is for Patient/{patient}, a person this member has no care "
                            "relationship with",
                            expression=change.resource_type,
                        )

    async def _owns_patient(self, members: MemberCodes, body: Any) -> bool:
        managing = body.get("managingOrganization") if isinstance(body, dict) else None
        org = organization(managing) if isinstance(managing, dict) else None
        return org is not None and await members.code(org) == self.member

    async def _may_write_for(self, tx: WriteTransaction, members: MemberCodes, patient: str) -> bool:
        team = await tx.current("CareTeam", care_team_id(patient))
        if team is not None and self.member in member_codes(team.body):
            return True
        record = await tx.current("Patient", patient)  # its own record, perhaps written just now
        return record is not None and await self._owns_patient(members, record.body)


def _patients_of(registry: SearchRegistry, resource_type: str, resource_id: str, body: Any) -> set[str]:
    """The ids of the Patients a resource belongs to, read as its patient parameter is indexed."""
    if not isinstance(body, dict):
        return set()
    if resource_type == "Patient":
        return {resource_id}
    out: set[str] = set()
    for node in _patient_extractor(registry, resource_type)(body):
        ref = reference_value(node[0])
        if ref is not None and ref[0] == "Patient" and ref[1] and not ref[2]:
            out.add(ref[1])
    return out


def _patient_extractor(registry: SearchRegistry, resource_type: str) -> Any:
    """The compiled extractor of `resource_type`'s patient parameter, found once per type (a page of
    `$everything` asks it for every resource)."""

    def find() -> Any:
        code = patient_param(registry, resource_type)
        return next(cp.extract for cp in registry.compiled(resource_type) if cp.param.code == code)

    return registry.memo(("member-view-patient", resource_type), find)
