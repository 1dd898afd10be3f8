"""`Patient/$mpi-link` and `Patient/$mpi-split`: an operator corrects the consortium record.

Matching links records automatically only on a certain match (the same valid 居民身份证); everything
else is a person's decision, made with these two operations (names after HAPI MDM's `$mdm-*` family,
which R4 does not standardise):
- `$mpi-link`: `source-patient` (a member's record) is the person `target-patient` names (a master,
  or another member's record: then both share that record's master, or a new one). Undoes a split,
  and completes the record's waiting review Task (`match_review.py`).
- `$mpi-split`: `source-patient` is not the person its master stands for: the link is removed and the
  master remembers it (`mpi-not-same-person`), so the member's next message does not relink it.

Both run in one write section, so masters are recomputed (survivorship, Provenance) atomically with
the change, and both are audited like every request (an AuditEvent naming the operation and client).
The master's Provenance names the operator (the client, as its AuditEvent does) beside the hub.
The answer is a Parameters resource with the `source-patient` record and its person's `master` as
they now stand.
"""

from __future__ import annotations

from typing import Any

from fhir_server.errors import BadRequest
from fhir_server.interactions import person
from fhir_server.interactions.match_review import close_review
from fhir_server.interactions.section import write_section
from fhir_server.interactions.service import FhirService
from fhir_server.interactions.write import delete_resource, write_resource
from fhir_server.model.person import patient_id

JsonObject = dict[str, Any]


def _patient_id(body: JsonObject, name: str) -> str:
    if body.get("resourceType") != "Parameters":
        raise BadRequest("this operation takes a Parameters resource", expression="Parameters")
    for i, param in enumerate(body.get("parameter") or []):
        if isinstance(param, dict) and param.get("name") == name:
            rid = patient_id(param.get("valueReference"))
            if rid is None:
                raise BadRequest(
                    f"'{name}' takes valueReference Patient/[id]",
                    expression=f"Parameters.parameter[{i}].valueReference",
                )
            return rid
    raise BadRequest(
        f"the '{name}' parameter (valueReference Patient/[id]) is missing", expression="Parameters"
    )


async def _answer(service: FhirService, source_id: str, master_id: str) -> JsonObject:
    params = []
    for name, rid in (("source-patient", source_id), ("master", master_id)):
        found = await service.store.current("Patient", rid)
        if found is not None and found.body is not None:
            params.append({"name": name, "resource": found.body})
    return {"resourceType": "Parameters", "parameter": params}


async def mpi_split(service: FhirService, body: JsonObject, *, operator: str) -> JsonObject:
    source_id = _patient_id(body, "source-patient")
    async with write_section(service) as (tx, changes):
        master = await person.split_source(
            service,
            tx,
            source_id,
            changes=changes,
            write=write_resource,
            delete=delete_resource,
            operator=operator,
        )
    return await _answer(service, source_id, master)


async def mpi_link(service: FhirService, body: JsonObject, *, operator: str) -> JsonObject:
    source_id = _patient_id(body, "source-patient")
    target_id = _patient_id(body, "target-patient")
    if source_id == target_id:
        raise BadRequest("source-patient and target-patient are the same record", expression="Parameters")
    async with write_section(service) as (tx, changes):
        master = await person.link_records(
            service,
            tx,
            source_id,
            target_id,
            changes=changes,
            write=write_resource,
            delete=delete_resource,
            operator=operator,
        )
        await close_review(service, tx, source_id, master, changes)
    return await _answer(service, source_id, master)
