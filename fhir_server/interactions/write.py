"""The write steps every interaction shares, run inside one serialised write section.

create / update / patch / delete and every transaction entry come down to these functions, so
If-Match, version numbering, validation and indexing are written once.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

from fhir_server.errors import (
    BadRequest,
    Issue,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    UnknownResourceType,
    Unprocessable,
)
from fhir_server.interactions import person
from fhir_server.interactions.events import ResourceChanged
from fhir_server.interactions.resident_ids import ResidentIdIndex
from fhir_server.interactions.service import FhirService
from fhir_server.model import care
from fhir_server.model.ids import new_resource_id
from fhir_server.model.person import NOT_MASTER, replaced_by
from fhir_server.model.references import is_valid_id
from fhir_server.model.sparse_update import SparseUpdate
from fhir_server.model.sparse_update import apply as apply_sparse
from fhir_server.search.ast import Criterion, SearchQuery
from fhir_server.search.parse import parse_search, parse_token
from fhir_server.storage.protocol import NewVersion, StoredVersion, WriteTransaction

JsonObject = dict[str, Any]


@dataclass(frozen=True, slots=True)
class WriteResult:
    stored: StoredVersion
    created: bool  # 201 rather than 200
    changed: bool = True  # False when a conditional create found an existing match


def check_type(service: FhirService, resource_type: str) -> None:
    if resource_type not in service.resource_types:
        raise UnknownResourceType(resource_type)


def check_body(resource_type: str, body: JsonObject) -> None:
    found = body.get("resourceType")
    if found != resource_type:
        raise BadRequest(
            f"resourceType '{found}' in the body does not match the URL's '{resource_type}'",
            expression=f"{resource_type}.resourceType" if found is None else "resourceType",
        )
    meta = body.get("meta")
    if meta is not None and not isinstance(meta, dict):
        # The server writes into meta (versionId, lastUpdated): it must be an object before validation.
        raise Unprocessable(
            f"{resource_type}.meta must be a JSON object",
            [
                Issue(
                    "error",
                    "structure",
                    f"{resource_type}.meta must be a JSON object",
                    (f"{resource_type}.meta",),
                )
            ],
        )


def parse_version_tag(value: str) -> int:
    """`W/"3"`, `"3"` or `3` (If-Match / ETag) → 3."""
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    if not text.isdigit():
        raise BadRequest(f'If-Match value {value!r} is not a version ETag like W/"1"')
    return int(text)


_SERVER_META = ("versionId", "lastUpdated")


def same_content(stored: JsonObject, candidate: JsonObject) -> bool:
    """True when two versions differ only in server-owned meta (versionId, lastUpdated)."""
    if len(stored) != len(candidate):
        return False
    for key, value in candidate.items():
        if key == "meta":
            old_meta = stored.get("meta") or {}
            if {k: v for k, v in value.items() if k not in _SERVER_META} != {
                k: v for k, v in old_meta.items() if k not in _SERVER_META
            }:
                return False
        elif stored.get(key, _MISSING) != value:
            return False
    return True


_MISSING = object()


def new_id() -> str:
    return new_resource_id()


def validate_or_raise(service: FhirService, resource: JsonObject) -> None:
    issues = service.validate(resource)
    errors = [i for i in issues if i.severity in ("error", "fatal")]
    if errors:
        first = errors[0]
        where = f" at {first.expression[0]}" if first.expression else ""
        raise Unprocessable(
            f"{resource.get('resourceType')} failed validation{where}: {first.diagnostics}", issues
        )


async def resolve_criteria(
    service: FhirService,
    tx: WriteTransaction,
    resource_type: str,
    criteria: str,
    *,
    follow_merges: bool = True,
) -> list[tuple[str, str]]:
    """Ids matching conditional criteria (`identifier=sys|val&...`), at most 2 (enough to tell 0/1/many).

    A Patient a merge replaced answers as its survivor (`link replaced-by`, followed): a member's later
    message naming the merged-away MRN lands on the record that replaced it, and the survivor, which
    carries that MRN too (`use: old`), is the same answer, not a second one. A conditional delete does
    not follow merges (`follow_merges=False`): a delete naming an old MRN must never remove the
    survivor; it matches both records and is refused as ambiguous."""
    query = service.registry.memo(
        ("conditional", resource_type, criteria), lambda: _criteria_query(service, resource_type, criteria)
    )
    if resource_type != "Patient" or not follow_merges:
        return await tx.search_ids(query, 2)
    found: list[tuple[str, str]] = []
    for _, rid in await tx.search_ids(query, MERGED_MATCHES):
        survivor = ("Patient", await _survivor_of(tx, rid))
        if survivor not in found:
            found.append(survivor)
    return found[:2]


MERGED_MATCHES = 8
"""Patients one MRN can match after merges (the record merged away, and each survivor in a chain of
merges carrying it as an old identifier) before an answer counts as "several people"."""
MAX_MERGE_CHAIN = 10


async def _survivor_of(tx: WriteTransaction, patient_id: str) -> str:
    """The Patient that (transitively) replaced `patient_id`, or itself when no merge replaced it."""
    rid = patient_id
    for _ in range(MAX_MERGE_CHAIN):
        found = await tx.current("Patient", rid)
        nxt = replaced_by(found.body) if found is not None else None
        if nxt is None or nxt == patient_id:
            return rid
        survivor = await tx.current("Patient", nxt)
        if survivor is None or survivor.deleted:
            return rid
        rid = nxt
    return rid


def _criteria_query(service: FhirService, resource_type: str, criteria: str) -> SearchQuery:
    criteria = criteria.lstrip("?")
    if criteria.startswith("identifier=") and "&" not in criteria:
        value = unquote_plus(criteria[len("identifier=") :])
        if "," not in value and "\\" not in value:
            return _identifier_query(service, resource_type, value)
    params = parse_qsl(criteria, keep_blank_values=True)
    if not params:
        raise BadRequest(f"Conditional criteria for {resource_type} are empty")
    return _parsed_criteria(service, resource_type, params)


def _parsed_criteria(service: FhirService, resource_type: str, params: list[tuple[str, str]]) -> SearchQuery:
    if resource_type == "Patient":
        # A conditional write or If-None-Exist is a member's, about its own record: a master carries
        # the member's MRN too (the union of identifiers) but is the hub's, never the one meant.
        params.append(NOT_MASTER)
    return parse_search(resource_type, params, service.registry, strict=True)


def _identifier_query(service: FhirService, resource_type: str, value: str) -> SearchQuery:
    """`identifier=<one token>`, the criteria of nearly every conditional write (each HL7 message has
    several, each naming another patient or order, so the memo of whole criteria rarely hits): the
    query parsed once per type, with this token put in. Parsing it whole cost ~19 µs, this ~5 µs."""
    template: SearchQuery = service.registry.memo(
        ("conditional-identifier", resource_type),
        lambda: _parsed_criteria(service, resource_type, [("identifier", "template|template")]),
    )
    token = parse_token(value)
    filters = tuple(
        replace(f, values=(token,)) if isinstance(f, Criterion) and f.param.code == "identifier" else f
        for f in template.filters
    )
    return replace(template, filters=filters, applied=(("identifier", value),))


def refuse_audit_change(resource_type: str, method: str) -> None:
    """The audit trail is create-only, for every client and the hub alike: an AuditEvent that could be
    updated or deleted would prove nothing (ATNA; the access trail is the consortium's privacy record)."""
    if resource_type == "AuditEvent":
        raise MethodNotAllowed(
            f"AuditEvent is create-only: {method} is not allowed on the audit trail",
            expression="AuditEvent",
        )


async def write_resource(
    service: FhirService,
    tx: WriteTransaction,
    resource_type: str,
    resource_id: str,
    body: JsonObject,
    *,
    method: str,
    if_match: str | None = None,
    must_exist: bool = False,
    changes: list[ResourceChanged],
    minted: bool = False,
    hub_owned: bool = False,
    index: ResidentIdIndex | None = None,
    sparse: SparseUpdate | None = None,
    reason: str | None = None,
) -> WriteResult:
    """Write a new version of `resource_type/resource_id` with `body`; checks, meta, validation, index.

    `minted`: the server has just made `resource_id` (`new_id()`), so nothing can be stored under it
    and the read of the current version is skipped (most writes of a transaction Bundle are these).
    `hub_owned`: the hub itself writes (a master Patient, a care-relationship CareTeam, its
    Provenance); any other Patient write is a member's record and is placed in the consortium record
    (`person.py`) in this same section, and no client writes a care-relationship CareTeam
    (`model/care.py`). `index`: the
    section's resident IDs, when it writes many Patients (a transaction Bundle). `sparse`: elements the
    body lacks keep their current values (HL7 v2 update semantics, `model/sparse_update.py`). `reason`:
    see `ResourceChanged.reason`."""
    if not is_valid_id(resource_id):
        raise BadRequest(f"'{resource_id}' is not a valid FHIR id", expression=f"{resource_type}.id")
    if method != "POST":
        refuse_audit_change(resource_type, method)
    current = None if minted else await tx.current(resource_type, resource_id)
    if if_match is not None:
        expected = parse_version_tag(if_match)
        if current is None or current.deleted or current.version != expected:
            have = "none" if current is None or current.deleted else str(current.version)
            raise PreconditionFailed(
                f'If-Match W/"{expected}" does not match the current version ({have}) of '
                f"{resource_type}/{resource_id}"
            )
    if must_exist and (current is None or current.deleted):
        raise NotFound(f"{resource_type}/{resource_id} does not exist")
    if sparse is not None and current is not None and current.body is not None:
        body = apply_sparse(current.body, body, sparse)
    version = (current.version + 1) if current is not None else 1
    meta = dict(body.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = service.clock()
    # resourceType, id, meta first (as the spec's examples and every client expect), then the client's JSON.
    resource = {"resourceType": resource_type, "id": resource_id, "meta": meta}
    resource.update((k, v) for k, v in body.items() if k not in ("resourceType", "id", "meta"))
    if resource_type == "CareTeam" and not hub_owned:
        care.refuse_client_write(resource_id, current.body if current is not None else None, resource)
    placement = None
    if resource_type == "Patient" and not hub_owned:
        person.refuse_master_write(current, resource)
        placement = await person.place_source(service, tx, resource, current, index)
    if current is not None and current.body is not None and same_content(current.body, resource):
        # A no-op update (an HIS resending unchanged demographics) keeps the current version, as HAPI does.
        if not hub_owned:
            changes.append(
                ResourceChanged(
                    resource_type,
                    resource_id,
                    current.version,
                    method,
                    current.body,
                    previous=current.body,
                    unchanged=True,
                )
            )
        return WriteResult(current, created=False, changed=False)
    if not (hub_owned and resource_type == "CareTeam"):
        validate_or_raise(service, resource)  # a care-relationship CareTeam is the hub's own making
    stored = await tx.write_version(
        NewVersion(
            resource_type,
            resource_id,
            version,
            meta["lastUpdated"],
            method,
            resource,
            service.extract(resource),
        )
    )
    previous = current.body if current is not None else None
    changes.append(
        ResourceChanged(
            resource_type, resource_id, version, method, resource, reason, previous, minted, hub_owned
        )
    )
    if index is not None and resource_type == "Patient":
        index.wrote(resource_id, resource)
    if placement is not None:
        await person.settle_masters(
            service,
            tx,
            resource,
            placement,
            changes=changes,
            write=write_resource,
            delete=delete_resource,
            index=index,
        )
    return WriteResult(stored, created=current is None or current.deleted)


async def delete_resource(
    service: FhirService,
    tx: WriteTransaction,
    resource_type: str,
    resource_id: str,
    *,
    changes: list[ResourceChanged],
    hub_owned: bool = False,
    index: ResidentIdIndex | None = None,
) -> StoredVersion | None:
    """Write a tombstone version; deleting what is absent or already deleted is a no-op (idempotent).

    A member's Patient leaves its master (recomputed, or deleted with its last source)."""
    refuse_audit_change(resource_type, "DELETE")
    current = await tx.current(resource_type, resource_id)
    if current is None or current.deleted:
        return None
    if resource_type == "Patient" and not hub_owned:
        person.refuse_master_write(current, None)
    if resource_type == "CareTeam" and not hub_owned:
        care.refuse_client_write(resource_id, current.body, None)
    stored = await tx.write_version(
        NewVersion(resource_type, resource_id, current.version + 1, service.clock(), "DELETE", None, None)
    )
    changes.append(
        ResourceChanged(
            resource_type,
            resource_id,
            stored.version,
            "DELETE",
            None,
            previous=current.body,
            by_hub=hub_owned,
        )
    )
    if index is not None and resource_type == "Patient":
        index.wrote(resource_id, None)
    if resource_type == "Patient" and not hub_owned:
        await person.source_deleted(
            service, tx, current, changes=changes, write=write_resource, delete=delete_resource, index=index
        )
    return stored


async def create_resource(
    service: FhirService,
    tx: WriteTransaction,
    resource_type: str,
    body: JsonObject,
    *,
    if_none_exist: str | None,
    changes: list[ResourceChanged],
    assigned_id: str | None = None,
    minted: bool = False,
    index: ResidentIdIndex | None = None,
) -> WriteResult:
    """POST semantics: a client `id` is ignored; `If-None-Exist` returns the one match instead.

    `assigned_id`: the id a transaction gave the entry beforehand; `minted` if it came from `new_id()`."""
    if if_none_exist:
        matches = await resolve_criteria(service, tx, resource_type, if_none_exist)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"If-None-Exist criteria '{if_none_exist}' match more than one {resource_type}"
            )
        if matches:
            existing = await tx.current(*matches[0])
            assert existing is not None
            return WriteResult(existing, created=False, changed=False)
    return await write_resource(
        service,
        tx,
        resource_type,
        assigned_id or new_id(),
        body,
        method="POST",
        changes=changes,
        minted=minted or assigned_id is None,
        index=index,
    )


async def conditional_target(
    service: FhirService, tx: WriteTransaction, resource_type: str, criteria: str, body_id: str | None
) -> tuple[str, bool]:
    """Which id a conditional update writes to: the single match, or a new one (the body's, if given),
    and whether the server minted that id (see `write_resource`)."""
    matches = await resolve_criteria(service, tx, resource_type, criteria)
    if len(matches) > 1:
        raise PreconditionFailed(f"Conditional criteria '{criteria}' match more than one {resource_type}")
    if matches:
        target = matches[0][1]
        if body_id is not None and body_id != target:
            raise BadRequest(
                f"The body's id '{body_id}' differs from the resource matched by '{criteria}' ({target})",
                expression=f"{resource_type}.id",
            )
        return target, False
    return (body_id, False) if body_id else (new_id(), True)
