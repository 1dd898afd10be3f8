"""Care relationships: which consortium members may see a person, kept inside the write section as one
hub-owned CareTeam per Patient record.

The rule (issue 16). A member sees a person's resources when it
- registered one of the person's records (its Organization is the record's `managingOrganization`), or
- is requester, performer, owner or interpreter of a ServiceRequest, Task, DiagnosticReport or
  ImagingStudy for one of the person's records (a referral naming the village clinic lets it see her);
- an active Consent whose provision names the member's Organization as `actor` permits (adds) or denies
  (removes, whatever else holds) it.
A person is one record, or a master and its sources (`person.py`): every record of the person gets the
same participants, so whichever record a resource names, the answer is the person's.

Why a CareTeam: R4's CareTeam is "all the people and organizations who ... participate in the
coordination and delivery of care for a patient". Kept by the hub (`model/care.py`: tag
`urn:yilian:care|consortium`, id `care-<patient id>`), it answers an operator's "why does this clinic see
her" in FHIR's terms (`participant.role` names each relationship). One `meta.security` label per member
(`urn:yilian:care:member|<code>`, which no client may write) turns the member filter into an ordinary
reverse chain (`_has:CareTeam:patient:_security=...`), run inside each backend's query, so paging and
totals stay right (`member_view.py`).

When: once per write section, before it commits (`section.write_section`), over the section's changes.
Most writes change no relationship (an ORU from the member that registered the patient): the
organizations a change newly names are checked against the record's CareTeam, read by id, and nothing
more runs. A change that may remove one (a referral re-addressed or deleted, any Consent, a person's
records linked, split or merged, a registration moved) recomputes the person's CareTeams from the stored
resources.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhir_server.interactions.events import ResourceChanged
from fhir_server.interactions.members import MemberCodes, organization
from fhir_server.interactions.service import FhirService
from fhir_server.interactions.write import delete_resource, write_resource
from fhir_server.model.access_record import MEMBER_SYSTEM
from fhir_server.model.care import CARE_SYSTEM, CARE_TAG, access_labels, care_team_id, member_codes
from fhir_server.model.person import is_master, listed, patient_id, referred
from fhir_server.search.parse import parse_search
from fhir_server.storage.protocol import WriteTransaction

JsonObject = dict[str, Any]

RELATIONSHIPS: dict[str, tuple[str, tuple[tuple[str, str], ...]]] = {
    "ServiceRequest": ("subject", (("requester", "requester"), ("performer", "performer"))),
    "Task": ("for", (("requester", "requester"), ("owner", "owner"))),
    "DiagnosticReport": ("subject", (("performer", "performer"), ("resultsInterpreter", "interpreter"))),
    "ImagingStudy": ("subject", (("series.performer.actor", "performer"), ("interpreter", "interpreter"))),
}
"""Per type: the element naming the patient, and (element path, participant role) of the organizations
it names. Each type's `patient` search parameter finds them for a person."""
MAX_RELATED = 10_000
"""Resources of one type read per person when its relationships are recomputed."""

Named = frozenset[tuple[str, str, str]]
"""(patient id, organization: `Organization/<id>` or `urn:yilian:member|<code>`, role)."""


def _references(value: Any, path: list[str]) -> list[JsonObject]:
    """The Reference objects at a dotted element path (lists are walked)."""
    if isinstance(value, list):
        return [ref for item in value for ref in _references(item, path)]
    if not isinstance(value, dict):
        return []
    if not path:
        return [value]
    return _references(value.get(path[0]), path[1:])


def named(resource_type: str, body: Any) -> Named:
    """The (patient, organization, role) relationships a resource states; empty for a deletion."""
    spec = RELATIONSHIPS.get(resource_type)
    if spec is None or not isinstance(body, dict):
        return frozenset()
    patient = patient_id(body.get(spec[0]))
    if patient is None:
        return frozenset()
    return frozenset(
        (patient, org, role)
        for path, role in spec[1]
        for ref in _references(body, path.split("."))
        if (org := organization(ref)) is not None
    )


def _patient_facts(body: Any) -> tuple[Any, ...] | None:
    """What of a Patient bears on care relationships: its registering organization and its links."""
    if not isinstance(body, dict):
        return None
    managing = body.get("managingOrganization")
    links = sorted(
        (str(link.get("type")), str((link.get("other") or {}).get("reference")))
        for link in listed(body, "link")
        if isinstance(link, dict)
    )
    return (managing.get("reference") if isinstance(managing, dict) else None, tuple(links))


def _consent_patient(body: Any) -> set[str]:
    found = patient_id(body.get("patient")) if isinstance(body, dict) else None
    return {found} if found else set()


def _provisions(provision: Any) -> list[tuple[str, str]]:
    """(permit|deny, organization) for every actor of a Consent provision and its nested provisions."""
    if not isinstance(provision, dict):
        return []
    kind = provision.get("type")
    out = [
        (kind, org)
        for actor in listed(provision, "actor")
        if kind in ("permit", "deny")
        and isinstance(actor, dict)
        and isinstance(actor.get("reference"), dict)
        and (org := organization(actor["reference"])) is not None
    ]
    for nested in listed(provision, "provision"):
        out.extend(_provisions(nested))
    return out


@dataclass
class Participant:
    """One member's relationships to a person: an Organization of it (as named), and the roles."""

    organization: str
    roles: set[str] = field(default_factory=set)


async def settle(service: FhirService, tx: WriteTransaction, changes: list[ResourceChanged]) -> None:
    """Bring the CareTeams of every person the section's `changes` touched up to date (appending their
    writes to `changes`)."""
    dirty: set[str] = set()
    added: dict[str, set[str]] = {}
    for change in changes:
        kind = change.resource_type
        if change.unchanged:
            continue
        if kind == "Patient":
            if _patient_facts(change.previous) != _patient_facts(change.resource):
                dirty.add(change.id)
        elif kind == "Consent":
            if change.previous != change.resource:
                dirty |= _consent_patient(change.previous) | _consent_patient(change.resource)
        elif kind in RELATIONSHIPS:
            before, after = named(kind, change.previous), named(kind, change.resource)
            if before <= after:
                for patient, org, _ in after - before:
                    added.setdefault(patient, set()).add(org)
            else:
                dirty |= {patient for patient, _, _ in before | after}
    if not dirty and not added:
        return
    minted = {c.id for c in changes if c.resource_type == "Patient" and c.minted}
    latest = _Latest(tx, changes)
    in_section: dict[str, _Relations] | None = None
    members = MemberCodes(tx)
    for patient, orgs in added.items():
        if patient in dirty:
            continue
        team = await tx.current("CareTeam", care_team_id(patient))
        have = member_codes(team.body if team is not None else None)
        codes = {code for org in orgs if (code := await members.code(org)) is not None}
        if not codes <= have:
            dirty.add(patient)
    done: set[str] = set()
    for patient in sorted(dirty):
        if patient in done:
            continue
        records = await _person_records(latest, patient)
        done.update(records)
        fresh = records == [patient] and patient in minted
        if fresh:
            in_section = in_section if in_section is not None else _section_relations(latest.written)
            relations = in_section.get(patient, _Relations())
        else:
            relations = await _stored_relations(service, tx, records)
        participants = await _participants(relations, members)
        for record in records:
            await _write_team(service, tx, latest, record, participants, changes, fresh=fresh)


class _Latest:
    """Current Patient bodies, from this section's own writes when it made them (no read needed)."""

    def __init__(self, tx: WriteTransaction, changes: list[ResourceChanged]) -> None:
        self.tx = tx
        self.written = {(c.resource_type, c.id): c.resource for c in changes}

    async def patient(self, rid: str) -> JsonObject | None:
        if ("Patient", rid) in self.written:
            return self.written["Patient", rid]
        found = await self.tx.current("Patient", rid)
        return found.body if found is not None else None


async def _person_records(latest: _Latest, patient: str) -> list[str]:
    """The ids of the person's records `patient` is one of: itself, or its master and the master's
    sources (a deleted record is itself alone: its CareTeam goes)."""
    body = await latest.patient(patient)
    if body is None:
        return [patient]
    master: str | None = patient if is_master(body) else None
    master_body = body if master else None
    for other in [] if master else referred(body):
        other_body = await latest.patient(other)
        if is_master(other_body):
            master, master_body = other, other_body
            break
    if master is None:
        return [patient]
    sources = [
        rid
        for link in listed(master_body, "link")
        if isinstance(link, dict) and (rid := patient_id(link.get("other"))) is not None
    ]
    return list(dict.fromkeys([master, *sources, patient]))


@dataclass
class _Relations:
    """What a person's access is computed from: her records, and the resources stating relationships."""

    patients: list[JsonObject] = field(default_factory=list)
    related: list[tuple[str, JsonObject]] = field(default_factory=list)  # (type, body)
    consents: list[JsonObject] = field(default_factory=list)  # active ones


async def _stored_relations(service: FhirService, tx: WriteTransaction, records: list[str]) -> _Relations:
    """The relations of the person whose records are `records`, as stored (this section's writes included)."""
    out = _Relations()
    for rid in records:
        stored = await tx.current("Patient", rid)
        if stored is not None and stored.body is not None:
            out.patients.append(stored.body)
    if not out.patients:
        return out
    refs = ",".join(f"Patient/{body['id']}" for body in out.patients)
    for kind in RELATIONSHIPS:
        out.related.extend((kind, body) for body in await _related(service, tx, kind, [("patient", refs)]))
    out.consents = await _related(service, tx, "Consent", [("patient", refs), ("status", "active")])
    return out


def _section_relations(written: dict[tuple[str, str], JsonObject | None]) -> dict[str, _Relations]:
    """Per Patient, the relations this section's own changes state. For a record the server created in
    this very section (a minted id) nothing stored before can name it, so these are all there are and no
    search is needed (a group commit of HL7 messages registers dozens of patients in one section)."""
    out: dict[str, _Relations] = {}
    for (kind, rid), body in written.items():
        if body is None:
            continue
        if kind == "Patient":
            out.setdefault(rid, _Relations()).patients.append(body)
        elif kind in RELATIONSHIPS:
            for patient in {p for p, _, _ in named(kind, body)}:
                out.setdefault(patient, _Relations()).related.append((kind, body))
        elif kind == "Consent" and body.get("status") == "active":
            for patient in _consent_patient(body):
                out.setdefault(patient, _Relations()).consents.append(body)
    return out


async def _participants(relations: _Relations, members: MemberCodes) -> dict[str, Participant]:
    """Member code → its relationships to the person (`care_team.py`'s rule)."""
    found: dict[str, Participant] = {}

    async def add(org: str, role: str) -> None:
        code = await members.code(org)
        if code is not None:
            found.setdefault(code, Participant(org)).roles.add(role)

    for body in relations.patients:
        managing = body.get("managingOrganization")
        org = organization(managing) if isinstance(managing, dict) and not is_master(body) else None
        if org is not None:
            await add(org, "registered")
    for kind, body in relations.related:
        for _, org, role in named(kind, body):
            await add(org, role)
    denied: set[str] = set()
    for body in relations.consents:
        for decision, org in _provisions(body.get("provision")):
            if decision == "permit":
                await add(org, "consent-permit")
            elif (code := await members.code(org)) is not None:
                denied.add(code)
    return {code: p for code, p in found.items() if code not in denied}


async def _related(
    service: FhirService, tx: WriteTransaction, resource_type: str, params: list[tuple[str, str]]
) -> list[JsonObject]:
    query = parse_search(resource_type, params, service.registry, strict=True)
    bodies = []
    for _, rid in await tx.search_ids(query, MAX_RELATED):
        stored = await tx.current(resource_type, rid)
        if stored is not None and stored.body is not None:
            bodies.append(stored.body)
    return bodies


def team_body(patient: str, participants: dict[str, Participant]) -> JsonObject:
    """The care-relationship CareTeam of Patient `patient` (participants by member code)."""
    members = []
    for code in sorted(participants):
        p = participants[code]
        member: JsonObject = {"identifier": {"system": MEMBER_SYSTEM, "value": code}}
        if p.organization.startswith("Organization/"):
            member = {"reference": p.organization, **member}
        roles = [{"coding": [{"system": CARE_SYSTEM, "code": role}]} for role in sorted(p.roles)]
        members.append({"role": roles, "member": member})
    return {
        "resourceType": "CareTeam",
        "id": care_team_id(patient),
        "meta": {"tag": [dict(CARE_TAG)], "security": access_labels(sorted(participants))},
        "status": "active",
        "name": "Consortium members with a care relationship",
        "subject": {"reference": f"Patient/{patient}"},
        "participant": members,
    }


async def _write_team(
    service: FhirService,
    tx: WriteTransaction,
    latest: _Latest,
    patient: str,
    participants: dict[str, Participant],
    changes: list[ResourceChanged],
    *,
    fresh: bool,
) -> None:
    """Write (or delete) `patient`'s CareTeam; `fresh`: the patient's id was minted in this section, so
    no CareTeam can exist under the id derived from it."""
    team_id = care_team_id(patient)
    if fresh and not participants:
        return
    if not participants or await latest.patient(patient) is None:
        await delete_resource(service, tx, "CareTeam", team_id, changes=changes, hub_owned=True)
        return
    body = team_body(patient, participants)
    await write_resource(
        service, tx, "CareTeam", team_id, body, method="PUT", changes=changes, hub_owned=True, minted=fresh
    )
