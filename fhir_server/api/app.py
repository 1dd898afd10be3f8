"""create_app: the FastAPI edge. One handler for the FhirError tree renders every OperationOutcome."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from fhir_server.api.access import AccessPolicyMiddleware
from fhir_server.api.access_log import AccessLogMiddleware
from fhir_server.api.auth import BearerTokenMiddleware
from fhir_server.api.context import ApiState
from fhir_server.api.responses import json_response
from fhir_server.api.routes_instance import build_instance_router
from fhir_server.api.routes_operations import OPERATIONS, build_compartment_router, build_operation_router
from fhir_server.api.routes_system import build_system_router
from fhir_server.api.routes_type import build_type_router
from fhir_server.api.routing import RouteTable
from fhir_server.api.smart import TOKEN_PATH, WELL_KNOWN_PATH, TokenIssuer, build_smart_router
from fhir_server.errors import FhirError, Issue, MethodNotAllowed, NotFound
from fhir_server.interactions.audit import AuditTrail
from fhir_server.interactions.capabilities import OperationInfo
from fhir_server.interactions.service import FhirService
from fhir_server.model.outcomes import operation_outcome
from fhir_server.settings import Settings

DICOMWEB_BASE = "/dicomweb"
LOGGER = logging.getLogger(__name__)


def _render(exc: FhirError) -> Response:
    return json_response(operation_outcome(exc.issues), exc.status)


async def _fhir_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, FhirError)
    if exc.status >= 500:
        LOGGER.error("%s %s failed: %s", request.method, request.url.path, exc.message)
    return _render(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return _render(NotFound(f"No FHIR endpoint at {request.method} {request.url.path}"))
    if exc.status_code == 405:
        return _render(MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}"))
    return json_response(operation_outcome([Issue("error", "exception", str(exc.detail))]), exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> Response:
    LOGGER.exception("unhandled error on %s %s", request.method, request.url.path)
    return json_response(
        operation_outcome(
            [Issue("fatal", "exception", f"Internal error ({type(exc).__name__}); see server log")]
        ),
        500,
    )


def create_app(
    settings: Settings,
    service: FhirService,
    *,
    operations: list[OperationInfo] | None = None,
    audit: AuditTrail | None = None,
) -> FastAPI:
    app = FastAPI(title="YiLian FHIR Hub", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.fhir = ApiState(service=service, settings=settings, operations=list(operations or OPERATIONS))
    app.add_exception_handler(FhirError, _fhir_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
    prefix = settings.base_path
    routers: tuple[RouteTable, ...] = (
        build_operation_router(),
        build_system_router(),
        build_type_router(),
        build_instance_router(),
        build_compartment_router(),
    )
    issuer = (
        TokenIssuer(settings.smart_clients, settings.smart_token_seconds) if settings.smart_clients else None
    )
    if issuer is not None:
        routers = (build_smart_router(issuer), *routers)
    for table in routers:
        app.router.routes.extend(table.routes(prefix))
    # Starlette runs the last-added middleware first: the token check wraps the access log, which then
    # sees the authenticated client name, and the access log wraps the role check (refusals, 403, are
    # audited under the client's name).
    app.add_middleware(AccessPolicyMiddleware, fhir_base=prefix, dicomweb_base=DICOMWEB_BASE)
    if audit is not None:
        app.add_middleware(
            AccessLogMiddleware,
            base_path=prefix,
            dicomweb_base=DICOMWEB_BASE,
            record=audit.record,
            clock=service.clock,
        )
    if settings.api_tokens or issuer is not None:
        app.add_middleware(
            BearerTokenMiddleware,
            tokens=settings.api_tokens,
            protected=(prefix, DICOMWEB_BASE),
            public=(f"{prefix}/metadata", f"{prefix}{WELL_KNOWN_PATH}", f"{prefix}{TOKEN_PATH}"),
            issuer=issuer,
        )
    return app
