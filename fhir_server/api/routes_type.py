"""Type-level routes: create, search, conditional update/patch/delete, type history, $validate."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api.access import API_CLIENT_SCOPE_KEY, stamp_registration
from fhir_server.api.body import read_limited, read_patch_body, read_resource_body
from fhir_server.api.context import base_url, state_of, view_of
from fhir_server.api.disclosed import note_bundle
from fhir_server.api.negotiation import negotiate
from fhir_server.api.responses import json_response, write_response
from fhir_server.api.routing import RouteTable
from fhir_server.errors import BadRequest
from fhir_server.interactions import crud
from fhir_server.interactions.history import history, refuse_member_history
from fhir_server.interactions.search import search_bundle
from fhir_server.interactions.write import check_body, check_type
from fhir_server.model.outcomes import operation_outcome

# Result-shaping parameters are not search criteria for conditional interactions.
_NOT_CRITERIA = {"_format", "_pretty"}


def _criteria(request: Request) -> str:
    pairs = [(k, v) for k, v in request.query_params.multi_items() if k not in _NOT_CRITERIA]
    if not pairs:
        raise BadRequest("A conditional interaction needs search criteria in the URL")
    return urlencode(pairs)


def build_type_router() -> RouteTable:
    router = RouteTable()

    @router.post("/{resource_type}/$validate")
    async def validate(request: Request, resource_type: str) -> Response:
        neg = negotiate(request)
        state = state_of(request)
        check_type(state.service, resource_type)
        body = await read_resource_body(request)
        if body.get("resourceType") == "Parameters":
            found = next(
                (p.get("resource") for p in body.get("parameter", []) if p.get("name") == "resource"), None
            )
            if not isinstance(found, dict):
                raise BadRequest("$validate Parameters need a 'resource' parameter")
            body = found
        check_body(resource_type, body)
        issues = state.service.validate(body)
        status = 422 if any(i.severity in ("error", "fatal") for i in issues) else 200
        return json_response(operation_outcome(issues), status, pretty=neg.pretty)

    @router.get("/{resource_type}/_history")
    async def type_history(request: Request, resource_type: str) -> Response:
        neg = negotiate(request)
        state = state_of(request)
        refuse_member_history(view_of(request), resource_type)
        bundle = await history(
            state.service,
            resource_type,
            None,
            list(request.query_params.multi_items()),
            base_url=base_url(request),
        )
        return json_response(bundle, pretty=neg.pretty)

    async def _search(request: Request, resource_type: str, params: list[tuple[str, str]]) -> Response:
        neg = negotiate(request)
        state = state_of(request)
        check_type(state.service, resource_type)
        bundle = await search_bundle(
            state.service.store,
            state.service.registry,
            resource_type,
            params,
            base_url=base_url(request),
            strict=neg.strict,
            view=view_of(request),
        )
        note_bundle(request, bundle)
        return json_response(bundle, pretty=neg.pretty)

    @router.get("/{resource_type}")
    async def search(request: Request, resource_type: str) -> Response:
        return await _search(request, resource_type, list(request.query_params.multi_items()))

    @router.post("/{resource_type}/_search")
    async def search_post(request: Request, resource_type: str) -> Response:
        state = state_of(request)
        media = (request.headers.get("content-type") or "").split(";")[0].strip()
        params = list(request.query_params.multi_items())
        if media == "application/x-www-form-urlencoded":
            raw = await read_limited(request, state.settings.max_body_bytes)
            params += parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
        elif media:
            raise BadRequest("POST _search needs Content-Type application/x-www-form-urlencoded")
        return await _search(request, resource_type, params)

    @router.post("/{resource_type}")
    async def create(request: Request, resource_type: str) -> Response:
        neg = negotiate(request)
        state = state_of(request)
        check_type(state.service, resource_type)
        body = await read_resource_body(request)
        stamp_registration(request.scope.get(API_CLIENT_SCOPE_KEY), body)
        result = await crud.create(
            state.service,
            resource_type,
            body,
            if_none_exist=request.headers.get("if-none-exist"),
            view=view_of(request),
        )
        return write_response(result.stored, 201 if result.changed else 200, neg, base_url(request))

    @router.put("/{resource_type}")
    async def conditional_update(request: Request, resource_type: str) -> Response:
        neg = negotiate(request)
        state = state_of(request)
        check_type(state.service, resource_type)
        body = await read_resource_body(request)
        stamp_registration(request.scope.get(API_CLIENT_SCOPE_KEY), body)
        result = await crud.conditional_update(
            state.service,
            resource_type,
            _criteria(request),
            body,
            if_match=request.headers.get("if-match"),
            view=view_of(request),
        )
        return write_response(result.stored, 201 if result.created else 200, neg, base_url(request))

    @router.patch("/{resource_type}")
    async def conditional_patch(request: Request, resource_type: str) -> Response:
        neg = negotiate(request)
        state = state_of(request)
        operations = await read_patch_body(request)
        result = await crud.patch(
            state.service,
            resource_type,
            None,
            operations,
            criteria=_criteria(request),
            if_match=request.headers.get("if-match"),
            view=view_of(request),
        )
        return write_response(result.stored, 200, neg, base_url(request), location=False)

    @router.delete("/{resource_type}")
    async def conditional_delete(request: Request, resource_type: str) -> Response:
        negotiate(request)
        stored = await crud.conditional_delete(
            state_of(request).service, resource_type, _criteria(request), view=view_of(request)
        )
        return Response(status_code=204, headers={"ETag": f'W/"{stored.version}"'} if stored else {})

    return router
