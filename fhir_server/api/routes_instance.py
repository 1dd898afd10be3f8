"""Instance-level routes: read, vread, update, patch, delete, instance history."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api.access import API_CLIENT_SCOPE_KEY, hidden_event, stamp_registration
from fhir_server.api.body import read_patch_body, read_resource_body
from fhir_server.api.context import base_url, state_of, view_of
from fhir_server.api.disclosed import note
from fhir_server.api.negotiation import negotiate
from fhir_server.api.responses import json_response, version_headers, write_response
from fhir_server.api.routing import RouteTable
from fhir_server.errors import BadRequest, NotFound
from fhir_server.interactions import crud
from fhir_server.interactions.history import history
from fhir_server.search.summary import apply_summary


def _shaped(request: Request, body: dict[str, Any] | None) -> dict[str, Any] | None:
    """A read honours `_summary` (true, text, data) and `_elements` as a search does."""
    summary = request.query_params.get("_summary")
    elements = request.query_params.get("_elements")
    if body is None or (summary is None and elements is None):
        return body
    if summary not in (None, "true", "false", "text", "data"):
        raise BadRequest(f"_summary={summary!r} is not valid on a read (true, false, text, data)")
    wanted = tuple(e.strip() for e in (elements or "").split(",") if e.strip())
    return apply_summary(body, summary if summary != "false" else None, wanted)


def build_instance_router() -> RouteTable:
    router = RouteTable()

    @router.get("/{resource_type}/{resource_id}/_history/{version}")
    async def vread(request: Request, resource_type: str, resource_id: str, version: str) -> Response:
        neg = negotiate(request)
        stored = await crud.vread(
            state_of(request).service, resource_type, resource_id, version, view=view_of(request)
        )
        headers = version_headers(stored, base_url(request), location=False)
        note(request, [stored.body])
        return json_response(_shaped(request, stored.body), pretty=neg.pretty, headers=headers)

    @router.get("/{resource_type}/{resource_id}/_history")
    async def instance_history(request: Request, resource_type: str, resource_id: str) -> Response:
        neg = negotiate(request)
        state = state_of(request)
        await crud.read_any(state.service, resource_type, resource_id, view=view_of(request))
        bundle = await history(
            state.service,
            resource_type,
            resource_id,
            list(request.query_params.multi_items()),
            base_url=base_url(request),
        )
        return json_response(bundle, pretty=neg.pretty)

    @router.get("/{resource_type}/{resource_id}")
    async def read(request: Request, resource_type: str, resource_id: str) -> Response:
        neg = negotiate(request)
        stored = await crud.read(state_of(request).service, resource_type, resource_id, view=view_of(request))
        if resource_type == "AuditEvent" and hidden_event(
            request.scope.get(API_CLIENT_SCOPE_KEY), stored.body
        ):
            raise NotFound(f"AuditEvent/{resource_id} not found")
        headers = version_headers(stored, base_url(request), location=False)
        if_none_match = request.headers.get("if-none-match")
        if if_none_match and if_none_match.strip() == headers["ETag"]:
            return Response(status_code=304, headers=headers)
        note(request, [stored.body])
        return json_response(_shaped(request, stored.body), pretty=neg.pretty, headers=headers)

    @router.put("/{resource_type}/{resource_id}")
    async def update(request: Request, resource_type: str, resource_id: str) -> Response:
        neg = negotiate(request)
        state = state_of(request)
        body = await read_resource_body(request)
        stamp_registration(request.scope.get(API_CLIENT_SCOPE_KEY), body)
        result = await crud.update(
            state.service,
            resource_type,
            resource_id,
            body,
            if_match=request.headers.get("if-match"),
            view=view_of(request),
        )
        return write_response(result.stored, 201 if result.created else 200, neg, base_url(request))

    @router.patch("/{resource_type}/{resource_id}")
    async def patch(request: Request, resource_type: str, resource_id: str) -> Response:
        neg = negotiate(request)
        state = state_of(request)
        operations = await read_patch_body(request)
        result = await crud.patch(
            state.service,
            resource_type,
            resource_id,
            operations,
            if_match=request.headers.get("if-match"),
            view=view_of(request),
        )
        return write_response(result.stored, 200, neg, base_url(request), location=False)

    @router.delete("/{resource_type}/{resource_id}")
    async def delete(request: Request, resource_type: str, resource_id: str) -> Response:
        negotiate(request)
        stored = await crud.delete(
            state_of(request).service, resource_type, resource_id, view=view_of(request)
        )
        headers = {"ETag": f'W/"{stored.version}"'} if stored is not None else {}
        return Response(status_code=204, headers=headers)

    return router
