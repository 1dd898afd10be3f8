"""Merging two records of one person (`Patient/$merge`, R5's shape; an HL7 ADT^A40), in the write section.

The *source* is the duplicate, the *target* the record that survives (the R5 operation's names). One
merge, in the section that runs it (a REST `$merge`, or a `POST Patient/$merge` entry of a transaction
Bundle such as an A40's):
- the target keeps everything it had (or becomes `result-patient` when the client sends it), gains the
  source's identifiers it lacks, marked `use: old` (a 居民身份证 the target lacks is the person's
  number and is copied as it is), and a `link replaces` to the source;
- the source is kept, `active: false`, with `link replaced-by` to the target (FHIR's representation of a
  merge; nothing is deleted, so a reference held elsewhere still resolves);
- every resource referring to the source (the Patient compartment's types, and Task.for) is re-pointed
  to the target; Provenance and AuditEvent are not: they record what happened, to what;
- both records end in one person's master when either had one (`person.join_merged`);
- one Provenance (activity ISO 21089 `merge`) names the two Patients and every re-pointed resource.
A member's later message naming the source's MRN lands on the target (`write.resolve_criteria`
follows `replaced-by`), and the re-pointed versions carry `ResourceChanged.reason = "merge"`, so
outbound ORU delivery does not send a report again because its subject moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_server.errors import BadRequest, Issue, PayloadTooLarge, Unprocessable
from fhir_server.interactions import person
from fhir_server.interactions.events import ResourceChanged
from fhir_server.interactions.search import compartment_filter
from fhir_server.interactions.service import FhirService
from fhir_server.interactions.write import delete_resource, write_resource
from fhir_server.model.care import is_care_team
from fhir_server.model.ids import new_resource_id
from fhir_server.model.person import NOT_MASTER, listed, patient_id, replaced_by
from fhir_server.model.references import rewrite_references
from fhir_server.search.ast import SearchQuery
from fhir_server.search.compartments import compartment_params
from fhir_server.search.parse import parse_search
from fhir_server.storage.protocol import StoredVersion, WriteTransaction
from terminology import cn_resident_id

JsonObject = dict[str, Any]

MERGE_REASON = "merge"
MAX_MOVED = 10_000
"""At most this many resources are re-pointed by one merge (one write section): a larger record is
refused (413) rather than holding every other writer back."""
NOT_MOVED = frozenset({"Patient", "Provenance", "AuditEvent"})
"""Types whose references to the source are not rewritten: Patient links are the merge's own (and the
master's, recomputed), Provenance and AuditEvent are history."""
ALSO_MOVED = {"Task": ("subject",)}
"""Types outside R4's Patient compartment that still name a patient (Task.for, searched as `subject`)."""
LIFECYCLE = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
PROVENANCE_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


@dataclass(frozen=True, slots=True)
class PatientChoice:
    """How the request names one of the two Patients: a reference, identifiers, or both."""

    reference: str | None
    identifiers: tuple[tuple[str, str], ...]
    where: str  # the parameter's name, for errors


@dataclass(frozen=True, slots=True)
class MergeRequest:
    source: PatientChoice
    target: PatientChoice
    result: JsonObject | None
    preview: bool


@dataclass(frozen=True, slots=True)
class MergeResult:
    source: StoredVersion
    target: StoredVersion
    moved: tuple[str, ...]  # `Type/id` of each re-pointed resource


def _error(message: str, expression: str, code: str = "processing") -> Unprocessable:
    return Unprocessable(message, [Issue("error", code, message, (expression,))])


def parse_request(body: Any) -> MergeRequest:
    """The `$merge` input Parameters → MergeRequest; 400 naming the parameter for what is malformed."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest("Patient/$merge takes a Parameters resource", expression="Parameters")
    refs: dict[str, str] = {}
    idents: dict[str, list[tuple[str, str]]] = {"source-patient": [], "target-patient": []}
    result, preview = None, False
    for i, param in enumerate(listed(body, "parameter")):
        where = f"Parameters.parameter[{i}]"
        name = param.get("name") if isinstance(param, dict) else None
        if name in ("source-patient", "target-patient"):
            rid = patient_id(param.get("valueReference"))
            if rid is None:
                raise BadRequest(
                    f"'{name}' takes valueReference Patient/[id]", expression=f"{where}.valueReference"
                )
            refs[name] = rid
        elif name in ("source-patient-identifier", "target-patient-identifier"):
            ident = param.get("valueIdentifier")
            if not (isinstance(ident, dict) and ident.get("system") and ident.get("value")):
                raise BadRequest(
                    f"'{name}' takes valueIdentifier with a system and a value",
                    expression=f"{where}.valueIdentifier",
                )
            idents[name.removesuffix("-identifier")].append((str(ident["system"]), str(ident["value"])))
        elif name == "result-patient":
            result = param.get("resource")
            if not isinstance(result, dict) or result.get("resourceType") != "Patient":
                raise BadRequest("'result-patient' takes a Patient resource", expression=f"{where}.resource")
        elif name == "preview":
            preview = param.get("valueBoolean") is True
    choices = []
    for name in ("source-patient", "target-patient"):
        if name not in refs and not idents[name]:
            raise BadRequest(
                f"name the {name.split('-')[0]} Patient: '{name}' (a reference) or '{name}-identifier'",
                expression="Parameters",
            )
        choices.append(PatientChoice(refs.get(name), tuple(idents[name]), name))
    return MergeRequest(choices[0], choices[1], result, preview)


async def _identified(
    service: FhirService, tx: WriteTransaction, choice: PatientChoice, other: str | None
) -> str | None:
    """The one member record carrying every identifier of `choice` (records merged away count as
    themselves here, and `other`, the merge's other Patient, which may carry them as `use: old`, is
    left out)."""
    found: set[str] | None = None
    for system, value in choice.identifiers:
        query = parse_search(
            "Patient", [("identifier", f"{system}|{value}"), NOT_MASTER], service.registry, strict=True
        )
        ids = {rid for _, rid in await tx.search_ids(query, 10)} - {other}
        found = ids if found is None else found & ids
    if not found:
        raise _error(
            f"the Patient named by {choice.where}-identifier is not known to the hub",
            f"Parameters.{choice.where}-identifier",
            "not-found",
        )
    if len(found) > 1:
        raise _error(
            f"{choice.where}-identifier matches {len(found)} Patients; name one",
            f"Parameters.{choice.where}-identifier",
            "multiple-matches",
        )
    (rid,) = found
    if choice.reference is not None and choice.reference != rid:
        raise _error(
            f"{choice.where} (Patient/{choice.reference}) and its identifiers (Patient/{rid}) disagree",
            f"Parameters.{choice.where}",
        )
    return rid


async def _resolve(
    service: FhirService, tx: WriteTransaction, request: MergeRequest
) -> tuple[StoredVersion, StoredVersion]:
    target_id = request.target.reference
    if request.target.identifiers:
        target_id = await _identified(service, tx, request.target, None)
    assert target_id is not None
    source_id = request.source.reference
    if request.source.identifiers:
        source_id = await _identified(service, tx, request.source, target_id)
    assert source_id is not None
    if source_id == target_id:
        raise BadRequest("source-patient and target-patient are the same record", expression="Parameters")
    target = await person.member_record(tx, target_id, "target-patient")
    source = await person.member_record(tx, source_id, "source-patient")
    if (survivor := replaced_by(target.body)) is not None:
        raise _error(
            f"target-patient Patient/{target_id} was itself merged into Patient/{survivor}",
            "Parameters.target-patient",
            "business-rule",
        )
    if (survivor := replaced_by(source.body)) not in (None, target_id):
        raise _error(
            f"source-patient Patient/{source_id} was already merged into Patient/{survivor}",
            "Parameters.source-patient",
            "business-rule",
        )
    return source, target


def _referencing_query(source_id: str, service: FhirService) -> SearchQuery:
    """Every current resource (but `NOT_MOVED`) with a compartment reference to Patient/`source_id`."""
    types = tuple(
        sorted(
            t
            for t in {*compartment_params("Patient"), *ALSO_MOVED}
            if t not in NOT_MOVED and t in service.resource_types
        )
    )
    criterion = compartment_filter("Patient", source_id, types, more=ALSO_MOVED)
    return SearchQuery(None, types, (criterion,), count=MAX_MOVED + 1)


def _identifiers_after(target: JsonObject, source: JsonObject) -> list[JsonObject]:
    """The target's identifiers, then each of the source's it lacks: as `use: old`, except a resident
    ID when the target has none (the person's own number, not an old key)."""
    have = [i for i in listed(target, "identifier") if isinstance(i, dict)]
    seen = {(i.get("system"), i.get("value")) for i in have}
    has_resident_id = any(i.get("system") == cn_resident_id.SYSTEM and i.get("use") != "old" for i in have)
    added = []
    for ident in listed(source, "identifier"):
        if not isinstance(ident, dict) or (ident.get("system"), ident.get("value")) in seen:
            continue
        if ident.get("system") == cn_resident_id.SYSTEM and not has_resident_id and ident.get("use") != "old":
            has_resident_id = True
            added.append(dict(ident))
        else:
            added.append({**ident, "use": "old"})
    return [*have, *added]


def _with_link(body: JsonObject, link_type: str, other: str, *, only: bool = False) -> list[JsonObject]:
    """`body`'s links plus `link_type` → Patient/`other` (`only`: replacing any other of that type)."""
    link = {"other": {"reference": f"Patient/{other}"}, "type": link_type}
    links = [
        lk
        for lk in listed(body, "link")
        if isinstance(lk, dict) and not (only and lk.get("type") == link_type) and lk != link
    ]
    return [*links, link]


async def merge_patients(
    service: FhirService,
    tx: WriteTransaction,
    request: MergeRequest,
    *,
    changes: list[ResourceChanged],
    agent: str,
) -> MergeResult:
    """Run one merge inside the caller's write section (see the module docstring)."""
    source, target = await _resolve(service, tx, request)
    assert source.body is not None and target.body is not None
    moved = []
    hits = await tx.search_ids(_referencing_query(source.id, service), MAX_MOVED + 1)
    if len(hits) > MAX_MOVED:
        raise PayloadTooLarge(
            f"Patient/{source.id} is referenced by more than {MAX_MOVED} resources; "
            "too many to re-point in one merge"
        )
    old_ref, new_ref = f"Patient/{source.id}", f"Patient/{target.id}"
    for rtype, rid in sorted(hits):
        found = await tx.current(rtype, rid)
        if found is None or found.body is None or is_care_team(found.body):
            continue  # a care-relationship CareTeam is the record's own; `care_team.settle` redoes both
        body = {k: v for k, v in found.body.items() if k != "meta"}
        rewrite_references(body, lambda ref: new_ref if ref == old_ref else None)
        await write_resource(
            service, tx, rtype, rid, body, method="PUT", changes=changes, reason=MERGE_REASON
        )
        moved.append(f"{rtype}/{rid}")

    survivor = dict(request.result) if request.result is not None else dict(target.body)
    if request.result is not None and survivor.get("id") not in (None, target.id):
        raise _error(
            f"result-patient has id '{survivor.get('id')}', not the target's '{target.id}'",
            "Parameters.result-patient",
        )
    survivor["identifier"] = _identifiers_after(survivor, source.body)
    survivor["link"] = _with_link(survivor, "replaces", source.id)
    survivor.pop("meta", None)
    target_written = await write_resource(
        service, tx, "Patient", target.id, survivor, method="PUT", changes=changes
    )
    retired = {k: v for k, v in source.body.items() if k != "meta"}
    retired["active"] = False
    retired["link"] = _with_link(retired, "replaced-by", target.id, only=True)
    source_written = await write_resource(
        service, tx, "Patient", source.id, retired, method="PUT", changes=changes
    )
    await person.join_merged(
        service,
        tx,
        source.id,
        target.id,
        changes=changes,
        write=write_resource,
        delete=delete_resource,
        operator=agent,
    )
    result = MergeResult(source_written.stored, target_written.stored, tuple(moved))
    await _record_provenance(service, tx, result, agent, changes)
    return result


async def _record_provenance(
    service: FhirService,
    tx: WriteTransaction,
    result: MergeResult,
    agent: str,
    changes: list[ResourceChanged],
) -> None:
    source, target = result.source, result.target
    provenance = {
        "resourceType": "Provenance",
        "target": [
            {"reference": f"Patient/{target.id}/_history/{target.version}"},
            {"reference": f"Patient/{source.id}/_history/{source.version}"},
            *({"reference": ref} for ref in result.moved),
        ],
        "recorded": service.clock(),
        "activity": {
            "coding": [{"system": LIFECYCLE, "code": "merge", "display": "Merge Record Lifecycle Event"}],
            "text": f"Patient/{source.id} merged into Patient/{target.id}",
        },
        "agent": [
            {
                "type": {"coding": [{"system": PROVENANCE_TYPE, "code": "performer"}]},
                "who": {"display": agent},
            }
        ],
        "entity": [{"role": "removal", "what": {"reference": f"Patient/{source.id}"}}],
    }
    await write_resource(
        service,
        tx,
        "Provenance",
        new_resource_id(),
        provenance,
        method="POST",
        changes=changes,
        minted=True,
        hub_owned=True,
    )


def output_parameters(body: JsonObject, result: MergeResult, *, preview: bool) -> JsonObject:
    """The `$merge` output: the input, an OperationOutcome saying what was (or would be) done, and the
    target as it now stands (or would)."""
    done = "would be merged" if preview else "merged"
    text = (
        f"Patient/{result.source.id} {done} into Patient/{result.target.id}; "
        f"resources re-pointed to it: {len(result.moved)}"
    )
    return {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "input", "resource": body},
            {
                "name": "outcome",
                "resource": {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "information", "code": "informational", "diagnostics": text}],
                },
            },
            {"name": "result", "resource": result.target.body},
        ],
    }
