"""InProcessSink: the adapters' way in when they run inside the hub process (no HTTP hop).

It satisfies `adapters.base.Sink` structurally; the interactions layer does not import adapters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_server.errors import BadRequest, FhirError
from fhir_server.interactions import crud
from fhir_server.interactions.bundles import batch, transaction
from fhir_server.interactions.member_view import MemberView
from fhir_server.interactions.search import search_bundle
from fhir_server.interactions.service import FhirService
from fhir_server.model.access_record import AccessRecord

JsonObject = dict[str, Any]


class InProcessSink:
    def __init__(
        self, service: FhirService, base_url: str, audit: Callable[[AccessRecord], None] | None = None
    ) -> None:
        """`audit`: the hub's audit trail (`AuditTrail.record`); None records nothing (tools, tests)."""
        self._service = service
        self._base_url = base_url.rstrip("/")
        self._audit = audit

    def audit(self, record: AccessRecord) -> None:
        if self._audit is not None:
            self._audit(record)

    async def submit(self, bundle: JsonObject, *, durable: bool = True) -> JsonObject:
        """Consumes `bundle`: the interactions rewrite references in place. A caller that may submit it
        again keeps its own copy (the HL7 pipeline translates again instead); copying every Bundle
        here cost ~4% of HL7 ingest."""
        kind = bundle.get("type")
        if kind == "transaction":
            return await transaction(
                self._service, bundle, base_url=self._base_url, return_resources=True, durable=durable
            )
        if kind == "batch":
            return await batch(self._service, bundle, base_url=self._base_url, return_resources=True)
        raise BadRequest(f"Sink.submit needs a batch or transaction Bundle, not {kind!r}")

    async def sync(self) -> None:
        await self._service.store.sync()

    async def search(
        self, resource_type: str, params: list[tuple[str, str]], *, member: str | None = None
    ) -> JsonObject:
        return await search_bundle(
            self._service.store,
            self._service.registry,
            resource_type,
            params,
            base_url=self._base_url,
            strict=True,
            view=MemberView(member) if member else None,
        )

    async def read(self, resource_type: str, resource_id: str) -> JsonObject | None:
        try:
            stored = await crud.read(self._service, resource_type, resource_id)
        except FhirError as exc:
            if exc.status in (404, 410):
                return None
            raise
        return stored.body
