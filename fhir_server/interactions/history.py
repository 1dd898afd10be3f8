"""history interactions (instance, type, system) as `history` Bundles with keyset paging on write order."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fhir_server.errors import BadRequest, Forbidden
from fhir_server.interactions.member_view import MemberView
from fhir_server.interactions.service import FhirService
from fhir_server.interactions.write import check_type
from fhir_server.search.dates import parse_instant_param
from fhir_server.storage.protocol import HistoryRequest, StoredVersion

JsonObject = dict[str, Any]


def _entry(version: StoredVersion, base_url: str) -> JsonObject:
    url = f"{version.resource_type}/{version.id}"
    entry: JsonObject = {"fullUrl": f"{base_url}/{url}"}
    if version.body is not None:
        entry["resource"] = version.body
    method = version.method
    entry["request"] = {"method": method, "url": url if method != "POST" else version.resource_type}
    status = "204 No Content" if version.deleted else ("201 Created" if version.version == 1 else "200 OK")
    entry["response"] = {
        "status": status,
        "etag": f'W/"{version.version}"',
        "lastModified": version.last_updated,
    }
    return entry


def refuse_member_history(view: MemberView | None, resource_type: str | None) -> None:
    """Type and system history list every version in write order, with no query to put a member's filter
    in: a member client reads the history of each resource it sees, and finds what changed by search."""
    if view is not None and view.covers(resource_type):
        where = f"{resource_type}/_history" if resource_type else "_history"
        raise Forbidden(
            f"{where} lists every person's records: a member client reads [type]/[id]/_history of what it "
            "sees, and finds what changed with a search (e.g. ?_lastUpdated=ge2026-01-01)",
            expression=resource_type or "_history",
        )


async def history(
    service: FhirService,
    resource_type: str | None,
    resource_id: str | None,
    params: list[tuple[str, str]],
    *,
    base_url: str,
) -> JsonObject:
    if resource_type is not None:
        check_type(service, resource_type)
    values = dict(params)
    limits = service.limits
    try:
        count = min(int(values.get("_count", limits.default_page_size)), limits.max_page_size)
        cursor = int(values["_cursor"]) if "_cursor" in values else None
    except ValueError as exc:
        raise BadRequest(f"_count and _cursor must be integers: {exc}") from exc
    if count < 0:
        raise BadRequest("_count must not be negative")
    request = HistoryRequest(
        resource_type=resource_type,
        id=resource_id,
        since=parse_instant_param("_since", values["_since"]) if "_since" in values else None,
        at=parse_instant_param("_at", values["_at"]) if "_at" in values else None,
        count=count + 1,
        before_seq=cursor,
    )
    versions = await service.store.history(request)
    total = await service.store.history_count(request)
    path = "/".join(p for p in (resource_type, resource_id) if p)
    path = f"{base_url}/{path}/_history" if path else f"{base_url}/_history"
    kept = [(k, v) for k, v in params if k in ("_since", "_at", "_count")]
    links = [{"relation": "self", "url": path + (f"?{urlencode(params)}" if params else "")}]
    if len(versions) > count:
        versions = versions[:count]
        links.append(
            {"relation": "next", "url": f"{path}?{urlencode([*kept, ('_cursor', str(versions[-1].seq))])}"}
        )
    return {
        "resourceType": "Bundle",
        "type": "history",
        "total": total,
        "link": links,
        "entry": [_entry(v, base_url) for v in versions],
    }
