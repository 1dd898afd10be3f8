"""Content negotiation for FHIR over HTTP: `_format`, Accept, Content-Type, `_pretty`, Prefer."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import Request

from fhir_server.errors import NotAcceptable, UnsupportedMediaType

JSON_TYPES = {"application/fhir+json", "application/json", "application/json+fhir", "json", "text/json"}
XML_TYPES = {"application/fhir+xml", "application/xml", "application/xml+fhir", "xml", "text/xml"}
PATCH_JSON = "application/json-patch+json"
FHIR_JSON = "application/fhir+json; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Negotiated:
    pretty: bool
    prefer_return: str  # minimal | representation | OperationOutcome
    strict: bool  # Prefer: handling=strict


def _media(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def negotiate(request: Request) -> Negotiated:
    """Decide the response form; anything that asks only for XML gets a clear 406."""
    query = request.query_params
    fmt = query.get("_format")
    if fmt is not None:
        media = _media(fmt)
        if media in XML_TYPES:
            raise NotAcceptable("XML is not supported yet; use _format=json (application/fhir+json)")
        if media not in JSON_TYPES:
            raise NotAcceptable(f"_format={fmt!r} is not supported; use application/fhir+json")
    else:
        accept = request.headers.get("accept")
        if accept:
            offered = [_media(part) for part in accept.split(",") if part.strip()]
            if offered and not any(
                m in JSON_TYPES or m in ("*/*", "application/*", "text/*") or m == PATCH_JSON for m in offered
            ):
                raise NotAcceptable(
                    f"Cannot produce {accept!r}; this server answers application/fhir+json (XML not yet)"
                )
    prefer = request.headers.get("prefer", "")
    prefer_return = "representation"
    strict = False
    for token in prefer.replace(";", ",").split(","):
        key, _, value = token.strip().partition("=")
        if key == "return" and value in ("minimal", "representation", "OperationOutcome"):
            prefer_return = value
        elif key == "handling":
            strict = value == "strict"
    return Negotiated(pretty=query.get("_pretty") == "true", prefer_return=prefer_return, strict=strict)


def check_content_type(request: Request, *, patch: bool = False) -> None:
    """Bodies must be FHIR JSON (or JSON Patch for PATCH); XML and forms get 415 with the reason."""
    raw = request.headers.get("content-type")
    if raw is None:
        return  # curl without -H: treat as JSON, the parser decides
    media = _media(raw)
    if patch:
        if media == PATCH_JSON:
            return
        raise UnsupportedMediaType(f"PATCH needs Content-Type {PATCH_JSON} (JSON Patch), not {media!r}")
    if media in JSON_TYPES:
        return
    if media in XML_TYPES:
        raise UnsupportedMediaType("XML bodies are not supported yet; send application/fhir+json")
    raise UnsupportedMediaType(f"Content-Type {media!r} is not supported; send application/fhir+json")
