"""System-level routes: CapabilityStatement, batch/transaction, system history and search."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api.access import API_CLIENT_SCOPE_KEY, bundle_refusal, stamp_registration
from fhir_server.api.body import read_resource_body
from fhir_server.api.context import base_url, state_of, view_of
from fhir_server.api.disclosed import note_bundle
from fhir_server.api.negotiation import negotiate
from fhir_server.api.responses import json_response
from fhir_server.api.routing import RouteTable
from fhir_server.api.smart import capability_security
from fhir_server.errors import BadRequest, Forbidden
from fhir_server.interactions.bundles import batch, transaction
from fhir_server.interactions.capabilities import capability_statement
from fhir_server.interactions.history import history, refuse_member_history
from fhir_server.interactions.search import search_bundle


def build_system_router() -> RouteTable:
    router = RouteTable()

    @router.get("/metadata")
    async def metadata(request: Request) -> Response:
        neg = negotiate(request)
        state = state_of(request)
        statement = capability_statement(
            state.service,
            base_url=base_url(request),
            operations=state.operations,
            instant=state.service.clock(),
            security=capability_security(base_url(request), smart=bool(state.settings.smart_clients))
            if state.settings.api_tokens or state.settings.smart_clients
            else None,
        )
        return json_response(statement, pretty=neg.pretty)

    @router.post("")
    @router.post("/")
    async def bundle(request: Request) -> Response:
        neg = negotiate(request)
        state = state_of(request)
        body = await read_resource_body(request)
        stamp_registration(request.scope.get(API_CLIENT_SCOPE_KEY), body)
        if body.get("resourceType") != "Bundle":
            raise BadRequest(
                "POST to the base URL needs a Bundle of type batch or transaction", expression="Bundle"
            )
        client = request.scope.get(API_CLIENT_SCOPE_KEY)
        if client is not None and (why := bundle_refusal(client, body, base_url(request))) is not None:
            raise Forbidden(f"{client.name} ({client.role}): {why}", expression="Bundle.entry")
        kind = body.get("type")
        return_resources = neg.prefer_return == "representation" and "return=representation" in (
            request.headers.get("prefer") or ""
        )
        if kind == "transaction":
            result = await transaction(
                state.service,
                body,
                base_url=base_url(request),
                return_resources=return_resources,
                view=view_of(request),
            )
        elif kind == "batch":
            result = await batch(
                state.service,
                body,
                base_url=base_url(request),
                return_resources=return_resources,
                view=view_of(request),
            )
        else:
            raise BadRequest(
                f"Bundle.type must be batch or transaction, not {kind!r}", expression="Bundle.type"
            )
        return json_response(result, pretty=neg.pretty)

    @router.get("/_history")
    async def system_history(request: Request) -> Response:
        neg = negotiate(request)
        state = state_of(request)
        refuse_member_history(view_of(request), None)
        bundle = await history(
            state.service, None, None, list(request.query_params.multi_items()), base_url=base_url(request)
        )
        return json_response(bundle, pretty=neg.pretty)

    @router.get("")
    @router.get("/")
    async def system_search(request: Request) -> Response:
        neg = negotiate(request)
        state = state_of(request)
        bundle = await search_bundle(
            state.service.store,
            state.service.registry,
            None,
            list(request.query_params.multi_items()),
            base_url=base_url(request),
            strict=neg.strict,
            view=view_of(request),
        )
        note_bundle(request, bundle)
        return json_response(bundle, pretty=neg.pretty)

    return router
