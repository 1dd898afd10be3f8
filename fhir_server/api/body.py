"""Reading request bodies with the size limit enforced while streaming (413 before memory is spent)."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from fhir_server.api.context import state_of
from fhir_server.api.negotiation import check_content_type
from fhir_server.errors import BadRequest, PayloadTooLarge
from fhir_server.model.jsonio import parse_json_object


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body of {declared} bytes exceeds the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_json(request: Request, limit: int, max_depth: int) -> dict[str, Any]:
    raw = await read_limited(request, limit)
    if not raw.strip():
        raise BadRequest("The request has no body; a FHIR resource (JSON) is required")
    return parse_json_object(raw, max_depth=max_depth)


async def read_json_any(request: Request, limit: int) -> Any:
    raw = await read_limited(request, limit)
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The request body is not valid JSON: {exc}") from exc


async def read_resource_body(request: Request) -> dict[str, Any]:
    """A FHIR JSON resource body: media type checked, size and nesting limits from the settings."""
    check_content_type(request)
    settings = state_of(request).settings
    return await read_json(request, settings.max_body_bytes, settings.max_json_depth)


async def read_patch_body(request: Request) -> Any:
    """A JSON Patch document (`application/json-patch+json`) within the body size limit."""
    check_content_type(request, patch=True)
    return await read_json_any(request, state_of(request).settings.max_body_bytes)
