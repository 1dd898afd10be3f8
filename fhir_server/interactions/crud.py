"""Single-resource interactions: read, vread, create, update, patch, delete and their conditional forms."""

from __future__ import annotations

from typing import Any

import jsonpatch

from fhir_server.errors import BadRequest, Gone, NotFound, PreconditionFailed, Unprocessable
from fhir_server.interactions.member_view import MemberView
from fhir_server.interactions.section import write_section
from fhir_server.interactions.service import FhirService
from fhir_server.interactions.write import (
    WriteResult,
    check_body,
    check_type,
    conditional_target,
    create_resource,
    delete_resource,
    resolve_criteria,
    write_resource,
)
from fhir_server.storage.protocol import StoredVersion

JsonObject = dict[str, Any]


async def _hidden(service: FhirService, view: MemberView | None, found: StoredVersion) -> bool:
    """Whether a member's `view` does not show `found` (it then answers as absent: 404, not 410)."""
    return view is not None and not await view.sees(service.store, service.registry, found)


async def read(
    service: FhirService, resource_type: str, resource_id: str, *, view: MemberView | None = None
) -> StoredVersion:
    """`view`: a member client's (`member_view.py`); what it does not see is not known."""
    check_type(service, resource_type)
    found = await service.store.current(resource_type, resource_id)
    if found is None or await _hidden(service, view, found):
        raise NotFound(f"{resource_type}/{resource_id} is not known")
    if found.deleted:
        raise Gone(f"{resource_type}/{resource_id} was deleted (version {found.version})")
    return found


async def read_any(
    service: FhirService, resource_type: str, resource_id: str, *, view: MemberView | None = None
) -> StoredVersion:
    """The current version even if it is a deletion (history of a deleted resource stays readable, but
    not to a member: what a deletion belonged to is no longer known)."""
    check_type(service, resource_type)
    found = await service.store.current(resource_type, resource_id)
    if found is None or await _hidden(service, view, found):
        raise NotFound(f"{resource_type}/{resource_id} is not known")
    return found


async def vread(
    service: FhirService,
    resource_type: str,
    resource_id: str,
    version: str,
    *,
    view: MemberView | None = None,
) -> StoredVersion:
    check_type(service, resource_type)
    if not version.isdigit():
        raise NotFound(f"{resource_type}/{resource_id} has no version '{version}'")
    found = await service.store.version(resource_type, resource_id, int(version))
    if found is None or await _hidden(service, view, found):
        raise NotFound(f"{resource_type}/{resource_id} has no version {version}")
    if found.deleted:
        raise Gone(f"{resource_type}/{resource_id} version {version} is a deletion")
    return found


async def create(
    service: FhirService,
    resource_type: str,
    body: JsonObject,
    *,
    if_none_exist: str | None = None,
    view: MemberView | None = None,
) -> WriteResult:
    check_type(service, resource_type)
    check_body(resource_type, body)
    async with write_section(service, view=view) as (tx, changes):
        result = await create_resource(
            service, tx, resource_type, body, if_none_exist=if_none_exist, changes=changes
        )
    return result


async def update(
    service: FhirService,
    resource_type: str,
    resource_id: str,
    body: JsonObject,
    *,
    if_match: str | None = None,
    view: MemberView | None = None,
) -> WriteResult:
    check_type(service, resource_type)
    check_body(resource_type, body)
    if body.get("id") != resource_id:
        raise BadRequest(
            f"The body's id '{body.get('id')}' does not match the URL's id '{resource_id}'",
            expression=f"{resource_type}.id",
        )
    async with write_section(service, view=view) as (tx, changes):
        result = await write_resource(
            service, tx, resource_type, resource_id, body, method="PUT", if_match=if_match, changes=changes
        )
    return result


async def conditional_update(
    service: FhirService,
    resource_type: str,
    criteria: str,
    body: JsonObject,
    *,
    if_match: str | None = None,
    view: MemberView | None = None,
) -> WriteResult:
    check_type(service, resource_type)
    check_body(resource_type, body)
    async with write_section(service, view=view) as (tx, changes):
        target, minted = await conditional_target(service, tx, resource_type, criteria, body.get("id"))
        result = await write_resource(
            service,
            tx,
            resource_type,
            target,
            body,
            method="PUT",
            if_match=if_match,
            changes=changes,
            minted=minted,
        )
    return result


def apply_patch(current: JsonObject, patch: Any, resource_type: str) -> JsonObject:
    """Apply a JSON Patch document; the result must stay the same resource (type and id)."""
    if not isinstance(patch, list):
        raise BadRequest("A JSON Patch body must be a JSON array of operations")
    try:
        patched = jsonpatch.apply_patch(current, patch)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
        raise Unprocessable(f"JSON Patch could not be applied: {exc}") from exc
    except (TypeError, ValueError, KeyError) as exc:
        raise BadRequest(f"Malformed JSON Patch: {exc}") from exc
    if not isinstance(patched, dict):
        raise Unprocessable("JSON Patch result is not a resource")
    if patched.get("resourceType") != resource_type or patched.get("id") != current.get("id"):
        raise Unprocessable("JSON Patch must not change resourceType or id")
    return patched


async def patch(
    service: FhirService,
    resource_type: str,
    resource_id: str | None,
    operations: Any,
    *,
    criteria: str | None = None,
    if_match: str | None = None,
    view: MemberView | None = None,
) -> WriteResult:
    check_type(service, resource_type)
    async with write_section(service, view=view) as (tx, changes):
        if criteria is not None:
            matches = await resolve_criteria(service, tx, resource_type, criteria)
            if len(matches) != 1:
                raise PreconditionFailed(
                    f"Conditional patch criteria '{criteria}' match {len(matches) or 'no'}"
                    f"{'+' if len(matches) > 1 else ''} {resource_type} (exactly one required)"
                )
            resource_id = matches[0][1]
        assert resource_id is not None
        current = await tx.current(resource_type, resource_id)
        if current is None or current.body is None:
            raise NotFound(f"{resource_type}/{resource_id} does not exist")
        patched = apply_patch(current.body, operations, resource_type)
        result = await write_resource(
            service,
            tx,
            resource_type,
            resource_id,
            patched,
            method="PATCH",
            if_match=if_match,
            changes=changes,
        )
    return result


async def delete(
    service: FhirService, resource_type: str, resource_id: str, *, view: MemberView | None = None
) -> StoredVersion | None:
    check_type(service, resource_type)
    async with write_section(service, view=view) as (tx, changes):
        stored = await delete_resource(service, tx, resource_type, resource_id, changes=changes)
    return stored


async def conditional_delete(
    service: FhirService, resource_type: str, criteria: str, *, view: MemberView | None = None
) -> StoredVersion | None:
    check_type(service, resource_type)
    async with write_section(service, view=view) as (tx, changes):
        matches = await resolve_criteria(service, tx, resource_type, criteria, follow_merges=False)
        if len(matches) > 1:
            raise PreconditionFailed(
                f"Conditional delete criteria '{criteria}' match more than one {resource_type}"
            )
        stored = None
        if matches:
            stored = await delete_resource(service, tx, resource_type, matches[0][1], changes=changes)
    return stored
