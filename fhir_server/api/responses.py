"""Building FHIR HTTP responses: JSON bodies, ETag / Last-Modified / Location headers, Prefer."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from starlette.responses import Response

from fhir_server.api.negotiation import FHIR_JSON, Negotiated
from fhir_server.errors import Issue
from fhir_server.model.jsonio import dumps
from fhir_server.model.outcomes import operation_outcome
from fhir_server.storage.protocol import StoredVersion
from fhir_server.storage.timestamps import instant_to_us

JsonObject = dict[str, Any]


def json_response(
    body: Any, status: int = 200, *, pretty: bool = False, headers: dict[str, str] | None = None
) -> Response:
    return Response(dumps(body, pretty=pretty), status_code=status, media_type=FHIR_JSON, headers=headers)


def http_date(instant: str) -> str:
    return format_datetime(datetime.fromtimestamp(instant_to_us(instant) / 1e6, UTC), usegmt=True)


def version_headers(stored: StoredVersion, base_url: str, *, location: bool) -> dict[str, str]:
    headers = {"ETag": f'W/"{stored.version}"', "Last-Modified": http_date(stored.last_updated)}
    if location:
        headers["Location"] = f"{base_url}/{stored.resource_type}/{stored.id}/_history/{stored.version}"
    return headers


def write_response(
    stored: StoredVersion, status: int, negotiated: Negotiated, base_url: str, *, location: bool = True
) -> Response:
    """Answer a write per `Prefer: return=` (representation by default)."""
    headers = version_headers(stored, base_url, location=location)
    if negotiated.prefer_return == "minimal" or stored.body is None:
        return Response(status_code=status, headers=headers)
    if negotiated.prefer_return == "OperationOutcome":
        outcome = operation_outcome(
            [
                Issue(
                    "information",
                    "informational",
                    f"{stored.resource_type}/{stored.id} version {stored.version}",
                )
            ]
        )
        return json_response(outcome, status, pretty=negotiated.pretty, headers=headers)
    return json_response(stored.body, status, pretty=negotiated.pretty, headers=headers)
