"""ASGI middleware that hands every FHIR request to the audit trail (who, what, outcome).

It sits at the HTTP edge because only the edge knows the client; it classifies the request by the
FHIR URL grammar (pure `classify`) and learns created ids from the Location header.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fhir_server.api.access import API_CLIENT_SCOPE_KEY, BREAK_GLASS_SCOPE_KEY, ApiClient
from fhir_server.api.auth import CLIENT_SCOPE_KEY
from fhir_server.api.disclosed import disclosed
from fhir_server.model.access_record import EXPORT, IMPORT, QUERY, AccessRecord

Classified = tuple[str, str | None, str | None]


def classify(method: str, parts: list[str]) -> Classified:
    """(restful-interaction code, resource type, id) for a path below the FHIR base, split on '/'."""
    n = len(parts)
    if n == 0:
        return ("transaction" if method == "POST" else "search-system"), None, None
    first = parts[0]
    if first == "metadata":
        return "capabilities", None, None
    if first == "_history":
        return "history-system", None, None
    if any(p.startswith("$") for p in parts):
        return "operation", first, parts[1] if n > 2 else None
    if n == 1:
        return (
            {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(
                method, "search-type"
            ),
            first,
            None,
        )
    second = parts[1]
    if second == "_history":
        return "history-type", first, None
    if second == "_search":
        return "search-type", first, None
    if n == 2:
        return {"PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, "read"), first, second
    if parts[2] == "_history":
        return ("vread" if n > 3 else "history-instance"), first, second
    return "search-compartment", first, second


DICOMWEB_SERVICES = "urn:yilian:dicomweb-service"
"""AuditEvent.subtype of a DICOMweb request: STOW-RS, QIDO-RS or WADO-RS (no standard code system)."""


class AccessLogMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        base_path: str,
        record: Callable[[AccessRecord], None],
        clock: Callable[[], str],
        dicomweb_base: str | None = None,
    ) -> None:
        self.app = app
        self.base_path = base_path.rstrip("/")
        self.dicomweb_base = dicomweb_base
        self.record = record
        self.clock = clock

    def _audited(self, path: str) -> bool:
        return any(
            base is not None and (path == base or path.startswith(base + "/"))
            for base in (self.base_path, self.dicomweb_base)
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not self._audited(path):
            await self.app(scope, receive, send)
            return
        seen: dict[str, Any] = {"status": 500, "location": None}

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                for key, value in message.get("headers", []):
                    if key == b"location":
                        seen["location"] = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            self._record(scope, path, seen)

    def _record(self, scope: Scope, path: str, seen: dict[str, Any]) -> None:
        if self.dicomweb_base is not None and path.startswith(self.dicomweb_base):
            self.record(self._dicomweb(scope, path, int(seen["status"])))
            return
        parts = [p for p in path[len(self.base_path) :].split("/") if p]
        interaction, resource_type, resource_id = classify(scope["method"], parts)
        location = seen["location"]
        if interaction == "create" and location and resource_type:
            marker = f"/{resource_type}/"
            if marker in location:
                resource_id = location.split(marker, 1)[1].split("/", 1)[0]
        headers = dict(scope.get("headers") or [])
        client = scope.get("client")
        query = scope.get("query_string", b"").decode("latin-1") or None
        self.record(
            AccessRecord(
                interaction=interaction,
                recorded=self.clock(),
                status=int(seen["status"]),
                client_address=client[0] if client else None,
                client_name=scope.get(CLIENT_SCOPE_KEY)
                or headers.get(b"user-agent", b"").decode("latin-1")
                or None,
                resource_type=resource_type,
                resource_id=resource_id,
                query=query,
                operation=next((p for p in parts if p.startswith("$")), None),
                client_member=_member_of(scope),
                break_glass=scope.get(BREAK_GLASS_SCOPE_KEY),
                entities=tuple(
                    {"reference": ref}
                    for ref in disclosed(scope)
                    if ref != f"{resource_type}/{resource_id}"  # the resource read is named already
                ),
            )
        )

    def _dicomweb(self, scope: Scope, path: str, status: int) -> AccessRecord:
        """A DICOMweb request: STOW-RS an Import, QIDO-RS (a collection: studies, series, instances) a
        Query, WADO-RS (an instance, its frames, metadata, a rendering) an Export, naming the study."""
        assert self.dicomweb_base is not None
        parts = [p for p in path[len(self.dicomweb_base) :].split("/") if p]
        method = scope["method"]
        if method == "POST":
            kind, action, service = IMPORT, "C", "STOW-RS"
        elif parts and parts[-1] in ("studies", "series", "instances"):
            kind, action, service = QUERY, "E", "QIDO-RS"
        else:
            kind, action, service = EXPORT, "R", "WADO-RS"
        entities: tuple[dict[str, Any], ...] = ()
        if len(parts) > 1 and parts[0] == "studies":
            entities = ({"identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{parts[1]}"}},)
        headers = dict(scope.get("headers") or [])
        client = scope.get("client")
        return AccessRecord(
            interaction="dicomweb",
            recorded=self.clock(),
            status=status,
            client_address=client[0] if client else None,
            client_name=scope.get(CLIENT_SCOPE_KEY)
            or headers.get(b"user-agent", b"").decode("latin-1")
            or None,
            query=scope.get("query_string", b"").decode("latin-1") or None,
            event_type=kind,
            subtype=(DICOMWEB_SERVICES, service),
            client_member=_member_of(scope),
            action=action,
            entities=entities,
        )


def _member_of(scope: Scope) -> str | None:
    client = scope.get(API_CLIENT_SCOPE_KEY)
    return client.member if isinstance(client, ApiClient) else None
