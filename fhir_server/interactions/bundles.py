"""Batch and transaction Bundles (POST [base]).

A transaction runs in one serialised write section and follows the spec's processing order (DELETE,
POST, PUT/PATCH, then GET); `urn:uuid:` fullUrls and conditional references (`Patient?identifier=...`)
are resolved before anything is written, so every entry sees final ids. Any failure rolls everything back.
A batch runs each entry on its own: one failing entry becomes an error response, the rest proceed.

Operations: `POST Patient/$merge` may be an entry (an HL7 A40 is a PID update and a merge, atomically).
R4 does not order operations among a transaction's entries; they run after every PUT/PATCH and before
the reads, so a merge sees the Bundle's own writes (the survivor an A40 registers in the same Bundle).

The Bundle passed in is consumed: its resources are rewritten in place (references, ids, meta).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from fhir_server.errors import BadRequest, FhirError, Issue, NotFound, PayloadTooLarge, PreconditionFailed
from fhir_server.interactions import crud
from fhir_server.interactions.events import ResourceChanged
from fhir_server.interactions.member_view import MemberView
from fhir_server.interactions.merge import merge_patients, output_parameters, parse_request
from fhir_server.interactions.resident_ids import ResidentIdIndex
from fhir_server.interactions.section import write_section
from fhir_server.interactions.service import FhirService
from fhir_server.interactions.write import (
    WriteResult,
    check_body,
    check_type,
    conditional_target,
    create_resource,
    delete_resource,
    new_id,
    resolve_criteria,
    write_resource,
)
from fhir_server.model import sparse_update
from fhir_server.model.outcomes import operation_outcome
from fhir_server.model.references import RELATIVE_REFERENCE, rewrite_references
from fhir_server.storage.protocol import StoredVersion, WriteTransaction

JsonObject = dict[str, Any]
TRANSACTION_AGENT = "client of a transaction Bundle (see its AuditEvent)"
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 4, "HEAD": 4}
OPERATION_ORDER = 3
TRANSACTION_OPERATIONS = frozenset({("Patient", "merge")})
"""Operations an entry may invoke (type, name): those that write and are meant to be atomic with
other writes; a read-only operation is asked over REST."""


@dataclass
class Entry:
    index: int
    method: str
    url: str
    resource_type: str
    resource_id: str | None
    criteria: str | None
    full_url: str | None
    resource: JsonObject | None
    request: JsonObject
    target_id: str | None = None  # resolved id for POST / conditional PUT
    minted: bool = False  # target_id is new from `new_id()`: nothing is stored under it
    existing: StoredVersion | None = None  # conditional create matched this
    same_as: Entry | None = None  # an earlier entry with the same conditional criteria answers this one
    operation: str | None = None  # `merge` for `POST Patient/$merge`
    response: JsonObject = field(default_factory=dict)


def _parse_entry(index: int, raw: Any, base_url: str) -> Entry:
    where = f"Bundle.entry[{index}]"
    if not isinstance(raw, dict):
        raise BadRequest(f"{where} must be an object", expression=where)
    request = raw.get("request")
    if not isinstance(request, dict):
        raise BadRequest(
            f"{where}.request is required in a batch or transaction", expression=f"{where}.request"
        )
    method = str(request.get("method", "")).upper()
    if method not in _ORDER:
        raise BadRequest(
            f"{where}.request.method '{method}' is not supported", expression=f"{where}.request.method"
        )
    url = str(request.get("url") or "")
    if url.startswith(base_url):
        url = url[len(base_url) :]
    url = url.lstrip("/")
    if not url:
        raise BadRequest(f"{where}.request.url is required", expression=f"{where}.request.url")
    path, _, query = url.partition("?")
    parts = path.split("/")
    resource_type = parts[0]
    operation = parts[-1][1:] if len(parts) == 2 and parts[-1].startswith("$") else None
    if operation is not None and (
        method != "POST" or (resource_type, operation) not in TRANSACTION_OPERATIONS
    ):
        raise BadRequest(
            f"{where}: {method} {url} cannot run in a batch or transaction (only POST Patient/$merge)",
            expression=f"{where}.request.url",
        )
    resource_id = parts[1] if len(parts) > 1 and parts[1] and operation is None else None
    resource = raw.get("resource")
    if resource is not None and not isinstance(resource, dict):
        raise BadRequest(f"{where}.resource must be an object", expression=f"{where}.resource")
    if method in ("POST", "PUT") and resource is None:
        raise BadRequest(f"{where} ({method}) has no resource", expression=f"{where}.resource")
    return Entry(
        index=index,
        method=method,
        url=url,
        resource_type=resource_type,
        resource_id=resource_id,
        criteria=query or None,
        full_url=raw.get("fullUrl"),
        resource=resource,
        request=request,
        operation=operation,
    )


def _rank(entry: Entry) -> int:
    return OPERATION_ORDER if entry.operation is not None else _ORDER[entry.method]


def _entry_error(entry: Entry, exc: FhirError) -> FhirError:
    """Prefix an entry's error with where it happened, keeping status and issues."""
    exc.message = f"Bundle.entry[{entry.index}] ({entry.method} {entry.url}): {exc.message}"
    exc.issues = [
        Issue(i.severity, i.code, f"Bundle.entry[{entry.index}]: {i.diagnostics}", i.expression)
        for i in exc.issues
    ]
    return exc


def _response_for(result: WriteResult, status_created: bool | None = None) -> JsonObject:
    stored = result.stored
    created = result.created if status_created is None else status_created
    return {
        "status": "201 Created" if created else "200 OK",
        "location": f"{stored.resource_type}/{stored.id}/_history/{stored.version}",
        "etag": f'W/"{stored.version}"',
        "lastModified": stored.last_updated,
    }


class _Resolver:
    """Maps fullUrls to final references, and conditional references to the one matching resource."""

    def __init__(self, service: FhirService, tx: WriteTransaction) -> None:
        self.service = service
        self.tx = tx
        self.by_full_url: dict[str, str] = {}
        self.conditional: dict[str, str] = {}

    async def resolve_conditional(self, reference: str) -> None:
        if reference in self.conditional or reference in self.by_full_url:
            return
        resource_type, _, criteria = reference.partition("?")
        check_type(self.service, resource_type)
        matches = await resolve_criteria(self.service, self.tx, resource_type, criteria)
        if len(matches) != 1:
            raise PreconditionFailed(
                f"Conditional reference '{reference}' matches {len(matches) if matches else 'no'}"
                f"{'+' if len(matches) > 1 else ''} resources (exactly one required)"
            )
        self.conditional[reference] = f"{matches[0][0]}/{matches[0][1]}"

    def lookup(self, reference: str) -> str | None:
        return self.by_full_url.get(reference) or self.conditional.get(reference)


async def _assign_targets(
    service: FhirService, tx: WriteTransaction, entries: list[Entry], resolver: _Resolver
) -> None:
    """Give every POST/PUT its final id before anything is written.

    Conditional entries with the same criteria name one resource: a second `ifNoneExist` with the
    criteria of an earlier entry is answered by that entry (no second create), and a conditional PUT
    with them updates the same resource. Nothing is written yet, so a search alone cannot see it.
    """
    claimed: dict[tuple[str, str], Entry] = {}
    for entry in entries:
        try:
            if entry.operation is not None:
                continue
            if entry.method == "POST":
                check_type(service, entry.resource_type)
                if_none_exist = entry.request.get("ifNoneExist")
                if if_none_exist:
                    key = (entry.resource_type, str(if_none_exist).lstrip("?"))
                    first = claimed.get(key)
                    if first is not None:
                        entry.same_as, entry.target_id = first, first.target_id
                    else:
                        await _match_if_none_exist(service, tx, entry, str(if_none_exist))
                        claimed[key] = entry
                if entry.target_id is None:
                    entry.target_id, entry.minted = new_id(), True
            elif entry.method == "PUT":
                check_type(service, entry.resource_type)
                assert entry.resource is not None
                if entry.criteria is not None and entry.resource_id is None:
                    key = (entry.resource_type, entry.criteria)
                    first = claimed.get(key)
                    if first is not None:
                        entry.target_id = first.target_id
                    else:
                        entry.target_id, entry.minted = await conditional_target(
                            service, tx, entry.resource_type, entry.criteria, entry.resource.get("id")
                        )
                        claimed[key] = entry
                elif entry.resource_id is not None:
                    entry.target_id = entry.resource_id
                else:
                    raise BadRequest(
                        f"PUT needs {entry.resource_type}/[id] or {entry.resource_type}?[criteria]"
                    )
            else:
                continue
        except FhirError as exc:
            raise _entry_error(entry, exc) from exc
        if entry.full_url and entry.target_id:
            resolver.by_full_url[entry.full_url] = f"{entry.resource_type}/{entry.target_id}"


async def _match_if_none_exist(
    service: FhirService, tx: WriteTransaction, entry: Entry, criteria: str
) -> None:
    matches = await resolve_criteria(service, tx, entry.resource_type, criteria)
    if len(matches) > 1:
        raise PreconditionFailed(f"ifNoneExist '{criteria}' matches more than one {entry.resource_type}")
    if matches:
        entry.existing = await tx.current(*matches[0])
        entry.target_id = matches[0][1]


async def _rewrite_all(entries: list[Entry], resolver: _Resolver, base_url: str) -> None:
    for entry in entries:
        if entry.resource is None:
            continue
        pending: list[str] = []

        def note(reference: str, pending: list[str] = pending) -> str | None:
            if reference in resolver.by_full_url:
                return resolver.by_full_url[reference]
            if reference.startswith(base_url + "/"):
                local = reference[len(base_url) + 1 :]
                if RELATIVE_REFERENCE.match(local):
                    return local
            if "?" in reference and not reference.startswith(("http:", "https:", "urn:")):
                pending.append(reference)
            elif reference.startswith("urn:uuid:"):
                raise BadRequest(f"Reference '{reference}' matches no fullUrl in this Bundle")
            return None

        try:
            rewrite_references(entry.resource, note)
            for reference in pending:
                await resolver.resolve_conditional(reference)
            if pending:
                rewrite_references(entry.resource, resolver.lookup)
        except FhirError as exc:
            raise _entry_error(entry, exc) from exc


async def _execute(
    service: FhirService,
    tx: WriteTransaction,
    entry: Entry,
    changes: list[ResourceChanged],
    index: ResidentIdIndex | None = None,
) -> JsonObject:
    """Run one (already resolved) entry inside the write section and return its response element."""
    if entry.operation is not None:
        request = parse_request(entry.resource)
        if request.preview:
            raise BadRequest("a $merge preview cannot run inside a batch or transaction; POST it alone")
        merged = await merge_patients(service, tx, request, changes=changes, agent=TRANSACTION_AGENT)
        assert entry.resource is not None
        entry.response["_output"] = output_parameters(entry.resource, merged, preview=False)
        return {"status": "200 OK"}
    if entry.method == "DELETE":
        check_type(service, entry.resource_type)
        if entry.resource_id is not None:
            await delete_resource(
                service, tx, entry.resource_type, entry.resource_id, changes=changes, index=index
            )
        elif entry.criteria is not None:
            matches = await resolve_criteria(
                service, tx, entry.resource_type, entry.criteria, follow_merges=False
            )
            if len(matches) > 1:
                raise PreconditionFailed(f"Conditional delete '{entry.url}' matches more than one resource")
            if matches:
                await delete_resource(
                    service, tx, entry.resource_type, matches[0][1], changes=changes, index=index
                )
        else:
            raise BadRequest("DELETE needs an id or search criteria")
        return {"status": "204 No Content"}
    if entry.method == "POST":
        assert entry.resource is not None and entry.target_id is not None
        check_body(entry.resource_type, entry.resource)
        if entry.same_as is not None:
            return {}  # answered after every entry ran, from the entry that wrote the resource
        if entry.existing is not None:
            return _response_for(WriteResult(entry.existing, created=False, changed=False))
        result = await create_resource(
            service,
            tx,
            entry.resource_type,
            entry.resource,
            if_none_exist=None,
            changes=changes,
            assigned_id=entry.target_id,
            minted=entry.minted,
            index=index,
        )
        entry.response["_resource"] = result.stored
        return _response_for(result)
    if entry.method == "PUT":
        assert entry.resource is not None and entry.target_id is not None
        check_body(entry.resource_type, entry.resource)
        body_id = entry.resource.get("id")
        if entry.resource_id is not None and body_id != entry.resource_id:
            raise BadRequest(f"The body's id '{body_id}' does not match the URL's id '{entry.resource_id}'")
        result = await write_resource(
            service,
            tx,
            entry.resource_type,
            entry.target_id,
            entry.resource,
            method="PUT",
            if_match=entry.request.get("ifMatch"),
            changes=changes,
            minted=entry.minted,
            index=index,
            sparse=sparse_update.from_request(entry.request),
        )
        entry.response["_resource"] = result.stored
        return _response_for(result)
    if entry.method == "PATCH":
        raise BadRequest("PATCH entries need a Binary or Parameters body; use PATCH on the resource URL")
    # GET / HEAD: a read (search-in-bundle is answered by the search engine through the API).
    if entry.resource_id is None:
        raise BadRequest("Only reads by id are supported as GET entries inside a transaction")
    current = await tx.current(entry.resource_type, entry.resource_id)
    if current is None or current.deleted:
        raise NotFound(f"{entry.resource_type}/{entry.resource_id} is not known")
    entry.response["_resource"] = current
    return {"status": "200 OK", "etag": f'W/"{current.version}"', "lastModified": current.last_updated}


async def _same_as_response(tx: WriteTransaction, entry: Entry) -> JsonObject:
    """A repeated conditional create is answered like a create that found its match: 200 OK."""
    assert entry.target_id is not None
    current = await tx.current(entry.resource_type, entry.target_id)
    assert current is not None
    entry.response["_resource"] = current
    return _response_for(WriteResult(current, created=False, changed=False))


def _entries(service: FhirService, bundle: JsonObject, base_url: str) -> list[Entry]:
    raw_entries = bundle.get("entry") or []
    if not isinstance(raw_entries, list):
        raise BadRequest("Bundle.entry must be an array", expression="Bundle.entry")
    if len(raw_entries) > service.limits.max_bundle_entries:
        raise PayloadTooLarge(
            f"Bundle has {len(raw_entries)} entries; the limit is {service.limits.max_bundle_entries}"
        )
    return [_parse_entry(i, raw, base_url) for i, raw in enumerate(raw_entries)]


def _response_entry(entry: Entry, response: JsonObject, return_resources: bool) -> JsonObject:
    stored: StoredVersion | None = entry.response.pop("_resource", None)
    output: JsonObject | None = entry.response.pop("_output", None)
    out: JsonObject = {}
    if output is not None and return_resources:
        out["resource"] = output
    if stored is not None:
        out["fullUrl"] = f"{stored.resource_type}/{stored.id}"
        if return_resources and stored.body is not None:
            out["resource"] = stored.body
    out["response"] = response
    return out


async def transaction(
    service: FhirService,
    bundle: JsonObject,
    *,
    base_url: str,
    return_resources: bool = False,
    durable: bool = True,
    view: MemberView | None = None,
) -> JsonObject:
    """`durable=False`: see `ResourceStore.write` (only for a caller with its own durable journal).
    `view`: a member client's, whose writes are checked (`MemberView.check_writes`)."""
    entries = _entries(service, bundle, base_url)
    ordered = sorted(entries, key=_rank)
    responses: dict[int, JsonObject] = {}
    async with write_section(service, durable=durable, view=view) as (tx, changes):
        resolver = _Resolver(service, tx)
        await _assign_targets(service, tx, ordered, resolver)
        await _rewrite_all(ordered, resolver, base_url)
        index = ResidentIdIndex()  # before the first write: see its docstring
        await index.prefetch(service, tx, [e.resource for e in ordered if e.resource is not None])
        for entry in ordered:
            try:
                responses[entry.index] = await _execute(service, tx, entry, changes, index)
            except FhirError as exc:
                raise _entry_error(entry, exc) from exc
        for entry in ordered:
            if entry.same_as is not None:
                responses[entry.index] = await _same_as_response(tx, entry)
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [_response_entry(e, responses[e.index], return_resources) for e in entries],
    }


async def batch(
    service: FhirService,
    bundle: JsonObject,
    *,
    base_url: str,
    return_resources: bool = False,
    view: MemberView | None = None,
) -> JsonObject:
    """`view`: a member's; a GET entry for what it does not see answers 404, as a read would, and a
    write it may not make answers 403."""
    entries = _entries(service, bundle, base_url)
    out: list[JsonObject] = []
    for entry in entries:
        try:
            if entry.method == "GET" and entry.resource_id is not None:
                stored = await crud.read(service, entry.resource_type, entry.resource_id, view=view)
                entry.response["_resource"] = stored
                response: JsonObject = {"status": "200 OK", "etag": f'W/"{stored.version}"'}
            else:
                async with write_section(service, view=view) as (tx, changes):
                    resolver = _Resolver(service, tx)
                    await _assign_targets(service, tx, [entry], resolver)
                    await _rewrite_all([entry], resolver, base_url)
                    response = await _execute(service, tx, entry, changes)
        except FhirError as exc:
            response = {
                "status": f"{exc.status} {_reason(exc.status)}",
                "outcome": operation_outcome(exc.issues),
            }
        out.append(_response_entry(entry, response, return_resources))
    return {"resourceType": "Bundle", "type": "batch-response", "entry": out}


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
