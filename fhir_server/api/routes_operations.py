"""Operation and compartment routes: Patient/$everything, $match, $merge, $mpi-link, $mpi-split,
compartment searches, $reindex.

Operations are registered before every other route (`/$reindex` would otherwise be read as a type),
the compartment search after all of them (`Patient/1/_history` is history, not a compartment).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api.auth import CLIENT_SCOPE_KEY
from fhir_server.api.body import read_resource_body
from fhir_server.api.context import base_url, state_of, view_of
from fhir_server.api.disclosed import note_bundle
from fhir_server.api.negotiation import negotiate
from fhir_server.api.responses import json_response
from fhir_server.api.routing import RouteTable
from fhir_server.errors import Issue
from fhir_server.interactions.capabilities import OperationInfo
from fhir_server.interactions.operations.everything import patient_everything
from fhir_server.interactions.operations.match import patient_match
from fhir_server.interactions.operations.merge import patient_merge
from fhir_server.interactions.operations.mpi_links import mpi_link, mpi_split
from fhir_server.interactions.operations.reindex import reindex
from fhir_server.interactions.search import compartment_search
from fhir_server.interactions.write import check_type
from fhir_server.model.outcomes import operation_outcome

OPERATIONS = [
    OperationInfo("validate", "http://hl7.org/fhir/OperationDefinition/Resource-validate", ("*",)),
    OperationInfo("everything", "http://hl7.org/fhir/OperationDefinition/Patient-everything", ("Patient",)),
    OperationInfo("match", "http://hl7.org/fhir/OperationDefinition/Patient-match", ("Patient",)),
    OperationInfo("merge", "http://hl7.org/fhir/OperationDefinition/Patient-merge", ("Patient",)),
    OperationInfo("mpi-link", "urn:yilian:OperationDefinition:mpi-link", ("Patient",)),
    OperationInfo("mpi-split", "urn:yilian:OperationDefinition:mpi-split", ("Patient",)),
    OperationInfo("reindex", "urn:yilian:OperationDefinition:reindex", ()),
]


def build_operation_router() -> RouteTable:
    router = RouteTable()

    @router.get("/Patient/{patient_id}/$everything")
    async def everything(request: Request, patient_id: str) -> Response:
        neg = negotiate(request)
        state = state_of(request)
        bundle = await patient_everything(
            state.service.store,
            state.service.registry,
            patient_id,
            list(request.query_params.multi_items()),
            base_url=base_url(request),
            view=view_of(request),
        )
        note_bundle(request, bundle)
        return json_response(bundle, pretty=neg.pretty)

    @router.post("/Patient/$match")
    async def match(request: Request) -> Response:
        neg = negotiate(request)
        service = state_of(request).service
        body = await read_resource_body(request)
        bundle = await patient_match(
            service, body, service.match_rules, base_url=base_url(request), view=view_of(request)
        )
        note_bundle(request, bundle)
        return json_response(bundle, pretty=neg.pretty)

    @router.post("/Patient/$merge")
    async def merge(request: Request) -> Response:
        neg = negotiate(request)
        answer = await patient_merge(
            state_of(request).service,
            await read_resource_body(request),
            agent=_client(request),
            view=view_of(request),
        )
        return json_response(answer, pretty=neg.pretty)

    @router.post("/Patient/$mpi-link")
    async def link(request: Request) -> Response:
        neg = negotiate(request)
        answer = await mpi_link(
            state_of(request).service, await read_resource_body(request), operator=_client(request)
        )
        return json_response(answer, pretty=neg.pretty)

    @router.post("/Patient/$mpi-split")
    async def split(request: Request) -> Response:
        neg = negotiate(request)
        answer = await mpi_split(
            state_of(request).service, await read_resource_body(request), operator=_client(request)
        )
        return json_response(answer, pretty=neg.pretty)

    @router.post("/$reindex")
    async def reindex_all(request: Request) -> Response:
        return await _reindex(request, None)

    @router.post("/{resource_type}/$reindex")
    async def reindex_type(request: Request, resource_type: str) -> Response:
        return await _reindex(request, resource_type)

    return router


def build_compartment_router() -> RouteTable:
    """`[base]/{compartment}/{id}/{type}`: registered last, after every literal three-segment path."""
    router = RouteTable()

    @router.get("/{compartment}/{compartment_id}/{resource_type}")
    async def compartment(
        request: Request, compartment: str, compartment_id: str, resource_type: str
    ) -> Response:
        neg = negotiate(request)
        state = state_of(request)
        check_type(state.service, compartment)
        check_type(state.service, resource_type)
        bundle = await compartment_search(
            state.service.store,
            state.service.registry,
            compartment,
            compartment_id,
            resource_type,
            list(request.query_params.multi_items()),
            base_url=base_url(request),
            strict=neg.strict,
            view=view_of(request),
        )
        note_bundle(request, bundle)
        return json_response(bundle, pretty=neg.pretty)

    return router


def _client(request: Request) -> str:
    """Who asks, as the access log names the client of its AuditEvent (token's client, else User-Agent)."""
    return str(request.scope.get(CLIENT_SCOPE_KEY) or request.headers.get("user-agent") or "REST client")


async def _reindex(request: Request, resource_type: str | None) -> Response:
    """Re-extract search indexes (after adding a custom SearchParameter); answers with the count."""
    neg = negotiate(request)
    service = state_of(request).service
    if resource_type is not None:
        check_type(service, resource_type)
    types = [resource_type] if resource_type else sorted(service.resource_types)
    count = await reindex(service.store, service.registry, types)
    outcome = operation_outcome([Issue("information", "informational", f"reindexed {count} resources")])
    return json_response(outcome, pretty=neg.pretty)
