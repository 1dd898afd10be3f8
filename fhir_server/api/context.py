"""What every route needs from the app: the service, the settings, the base URL of this request."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from fhir_server.interactions.capabilities import OperationInfo
from fhir_server.interactions.member_view import MemberView
from fhir_server.interactions.service import FhirService
from fhir_server.model.access_record import MEMBER_VIEW_SCOPE_KEY
from fhir_server.settings import Settings


@dataclass
class ApiState:
    service: FhirService
    settings: Settings
    operations: list[OperationInfo]


def state_of(request: Request) -> ApiState:
    state: ApiState = request.app.state.fhir
    return state


def base_url(request: Request) -> str:
    state = state_of(request)
    if state.settings.public_base_url:
        return state.settings.public_base_url.rstrip("/")
    return f"{str(request.base_url).rstrip('/')}{state.settings.base_path}"


def view_of(request: Request) -> MemberView | None:
    """The member view of the request's client, as the access policy decided it once per request
    (`access.member_view`, put in the scope for the DICOMweb routes too); None: it sees all."""
    member = request.scope.get(MEMBER_VIEW_SCOPE_KEY)
    return MemberView(member) if isinstance(member, str) else None
