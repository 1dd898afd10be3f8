"""The consortium record inside the write section: a person's member records are linked by one master.

Modelled as HAPI MDM models it: each member's own record (a *source*: keyed by its MRN, written by its
HIS over HL7, its PACS, or a REST client) carries `link {type: refer}` to the person's *master* Patient,
which the hub alone writes (`meta.tag urn:yilian:mpi|master`, Provenance agent = the hub) and which
carries `link {type: seealso}` to each source and the survivorship of their data (`survivorship.py`).

Unlike HAPI, a master exists once a person has two records (or an operator links one): a person known to
one member only is that member's record alone. Why: a master carries the union of its sources'
identifiers, so a member's `Patient?identifier=<its MRN>` would find two Patients for every patient, a
PACS C-FIND would list every patient twice, and each registration would cost two more writes, for a
master that links nothing.

Why inside the write section and not after it: a search must never see two linked records without
their master, and two members registering one person at the same moment must end with one master.
Write sections are serialised, so the lookup and the writes of sources and master are one atomic step.

Matching today: a valid 居民身份证 (GB 11643) is a certain match. A source carrying one joins the
master that carries the same number; a record of another member carrying it and not yet linked is
linked with it under a new master. A source whose number changed moves to its new person's master (or
to none, if nobody else carries the number); the master it left is recomputed, and deleted once no
source is left. A source without a resident ID keeps the master it has.

What else a Patient write keeps here (hub-owned state a member's sender does not know):
- the `refer` link to the master (a client's body may omit it or send it back; it is set either way);
- merge links (`replaces` / `replaced-by`, written by an A40 or `$merge`): the current version's are
  kept, and a record replaced by another stays `active: false`. A member's next A08 cannot undo a merge.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fhir_server.errors import Forbidden, Issue, NotFound, Unprocessable
from fhir_server.interactions.events import ResourceChanged
from fhir_server.interactions.matching import resident_ids
from fhir_server.interactions.resident_ids import Holder, ResidentIdIndex, certain_matches
from fhir_server.interactions.service import FhirService
from fhir_server.interactions.survivorship import master_body
from fhir_server.model.ids import new_resource_id
from fhir_server.model.person import is_master, listed, not_same_person, patient_id, referred
from fhir_server.storage.protocol import StoredVersion, WriteTransaction

JsonObject = dict[str, Any]
log = logging.getLogger(__name__)

MERGE_LINK_TYPES = ("replaces", "replaced-by")
PROVENANCE_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"
HUB_AGENT = "YiLian hub (consortium master patient index)"


WriteFn = Callable[..., Awaitable[Any]]
"""`write.write_resource`, passed in: `write` imports this module, so this one cannot import it."""
DeleteFn = Callable[..., Awaitable[StoredVersion | None]]


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a source Patient belongs: its master before this write, after it (None: no master), and
    the unlinked records of other members that join that master with it (certain matches)."""

    previous: str | None
    target: str | None
    joining: tuple[Holder, ...] = ()


def refuse_master_write(current: StoredVersion | None, body: JsonObject | None) -> None:
    """Masters are the hub's: a client may read them, never write, tag or delete one."""
    if (current is not None and is_master(current.body)) or is_master(body):
        raise Forbidden(
            "Master Patients are kept by the hub's master patient index (meta.tag urn:yilian:mpi|master); "
            "write the member's own Patient record instead",
            expression="Patient.meta.tag",
        )


def _ref_id(link: Any) -> str | None:
    return patient_id(link.get("other")) if isinstance(link, dict) else None


async def _master_of(tx: WriteTransaction, body: JsonObject | None) -> str | None:
    """The master a stored source links to (`refer` to a Patient with the master tag)."""
    for other in referred(body):
        found = await tx.current("Patient", other)
        if found is not None and is_master(found.body):
            return other
    return None


async def place_source(
    service: FhirService,
    tx: WriteTransaction,
    resource: JsonObject,
    current: StoredVersion | None,
    index: ResidentIdIndex | None = None,
) -> Placement:
    """Choose the source's master and set the hub-owned links (and merge state) on `resource`."""
    stored = current.body if current is not None else None
    previous = await _master_of(tx, stored)
    target = previous
    joining: list[Holder] = []
    numbers = sorted(resident_ids(resource))
    if numbers:
        source_id = str(resource["id"])
        matches = await certain_matches(service, tx, source_id, numbers, index)
        # A master an operator split this record from is not its person, whatever the numbers say.
        refused = {rid for rid, body in matches if is_master(body) and source_id in not_same_person(body)}
        masters = [rid for rid, body in matches if is_master(body) and rid not in refused]
        if len(set(masters)) > 1 and previous not in masters:
            log.warning("%d masters carry one resident ID; the source joins the first by id", len(masters))
        # A resident ID decides: the source belongs with the records carrying its number, not with a
        # master that does not carry it (a corrected number moves the record to its person).
        target = (previous if previous in masters else masters[0]) if masters else None
        joining = [(rid, b) for rid, b in matches if not is_master(b) and await _master_of(tx, b) is None]
        if refused and target is None:
            joining = []  # records that were split apart are not joined again under a new master
        elif target is not None:
            excluded = not_same_person(next((b for rid, b in matches if rid == target), {}))
            joining = [(rid, b) for rid, b in joining if rid not in excluded]
        if joining and target is None:
            target = new_resource_id()
    if "link" in resource and not isinstance(resource["link"], list):
        return Placement(previous, target, tuple(joining))  # the validator refuses it
    hub_refs = {rid for rid in (previous, target) if rid is not None}
    links = [
        lk
        for lk in resource.get("link") or []
        if not (isinstance(lk, dict) and lk.get("type") == "refer" and _ref_id(lk) in hub_refs)
    ]
    links += [lk for lk in listed(stored, "link") if lk.get("type") in MERGE_LINK_TYPES and lk not in links]
    if target is not None:
        links.append(_refer(target))
    if links:
        resource["link"] = links
    else:
        resource.pop("link", None)
    if any(isinstance(lk, dict) and lk.get("type") == "replaced-by" for lk in links):
        resource["active"] = False
    return Placement(previous, target, tuple(joining))


def _refer(master_id: str) -> JsonObject:
    return {"other": {"reference": f"Patient/{master_id}"}, "type": "refer"}


async def settle_masters(
    service: FhirService,
    tx: WriteTransaction,
    source: JsonObject,
    placement: Placement,
    *,
    changes: list[ResourceChanged],
    write: WriteFn,
    delete: DeleteFn,
    index: ResidentIdIndex | None = None,
) -> None:
    """After the source is written: link the records joining it, recompute its master (and the one it
    left) by survivorship."""
    source_id = str(source["id"])
    if placement.target is not None:
        joined: dict[str, JsonObject | None] = {source_id: source}
        for other_id, other in placement.joining:
            await _relink(service, tx, other_id, other, None, placement.target, changes, write, index)
            # Survivorship ranks sources by when their member last wrote them, not by this link write.
            joined[other_id] = other
        await _recompute(service, tx, placement.target, joined, changes, write, delete, index)
    if placement.previous is not None and placement.previous != placement.target:
        await _recompute(service, tx, placement.previous, {source_id: None}, changes, write, delete, index)


async def source_deleted(
    service: FhirService,
    tx: WriteTransaction,
    current: StoredVersion,
    *,
    changes: list[ResourceChanged],
    write: WriteFn,
    delete: DeleteFn,
    index: ResidentIdIndex | None = None,
) -> None:
    """A deleted source leaves its master: recompute it without the source (deleted when none is left)."""
    master = await _master_of(tx, current.body)
    if master is not None:
        await _recompute(service, tx, master, {current.id: None}, changes, write, delete, index)


async def _recompute(
    service: FhirService,
    tx: WriteTransaction,
    master_id: str,
    changed: dict[str, JsonObject | None],
    changes: list[ResourceChanged],
    write: WriteFn,
    delete: DeleteFn,
    index: ResidentIdIndex | None,
    *,
    split: str | None = None,
    unsplit: str | None = None,
    operator: str | None = None,
) -> None:
    """Rewrite master `master_id` with the sources in `changed` as given (None: no longer a source),
    remembering `split` as not this person, or forgetting that of `unsplit`."""
    current = await tx.current("Patient", master_id)
    old_body = current.body if current is not None else None
    not_same = (not_same_person(old_body) | ({split} if split else set())) - {unsplit}
    before = {rid for lk in listed(old_body, "link") if (rid := _ref_id(lk)) is not None}
    sources = [body for body in changed.values() if body is not None]
    for rid in sorted(before - changed.keys()):
        found = await tx.current("Patient", rid)
        if found is not None and found.body is not None and not is_master(found.body):
            sources.append(found.body)
    if not sources:
        if old_body is not None:
            await delete(service, tx, "Patient", master_id, changes=changes, hub_owned=True, index=index)
        return
    body = master_body(master_id, sources, sorted(not_same))
    after = {str(s["id"]) for s in sources}
    result = await write(
        service,
        tx,
        "Patient",
        master_id,
        body,
        method="PUT",
        changes=changes,
        minted=current is None,
        hub_owned=True,
        index=index,
    )
    if result.changed and (old_body is None or after != before):
        trigger = next(iter(changed))  # the record whose write prompted this one
        await _record_provenance(
            service, tx, result.stored, trigger, old_body is None, changes, write, operator
        )


async def _record_provenance(
    service: FhirService,
    tx: WriteTransaction,
    master: StoredVersion,
    source_id: str,
    created: bool,
    changes: list[ResourceChanged],
    write: WriteFn,
    operator: str | None = None,
) -> None:
    """Who linked the person's records: the hub, prompted by a write of `source_id`, and the operator
    whose decision it carried out (`$mpi-link`, `$mpi-split`, `$merge`: the client, as its AuditEvent
    names it). Written when a master is created or its sources change; a demographic change flowing
    from a source into its master is the source's own Provenance's to account for."""
    agents: list[JsonObject] = [
        {
            "type": {"coding": [{"system": PROVENANCE_TYPE, "code": "assembler"}]},
            "who": {"display": HUB_AGENT},
        }
    ]
    if operator is not None:
        agents.append(
            {
                "type": {"coding": [{"system": PROVENANCE_TYPE, "code": "performer"}]},
                "who": {"display": operator},
            }
        )
    provenance = {
        "resourceType": "Provenance",
        "target": [{"reference": f"Patient/{master.id}/_history/{master.version}"}],
        "recorded": service.clock(),
        "activity": {
            "coding": [{"system": DATA_OPERATION, "code": "CREATE" if created else "UPDATE"}],
            "text": "master patient index: link member records of one person"
            + (" (an operator's decision)" if operator is not None else ""),
        },
        "agent": agents,
        "entity": [{"role": "source", "what": {"reference": f"Patient/{source_id}"}}],
    }
    rid = new_resource_id()
    await write(
        service,
        tx,
        "Provenance",
        rid,
        provenance,
        method="POST",
        changes=changes,
        minted=True,
        hub_owned=True,
    )


async def member_record(tx: WriteTransaction, rid: str, what: str) -> StoredVersion:
    """Patient `rid`, which an operation's parameter `what` names: 404 if absent, 422 if a master."""
    found = await tx.current("Patient", rid)
    if found is None or found.body is None:
        raise NotFound(f"{what} Patient/{rid} does not exist")
    if is_master(found.body):
        raise Unprocessable(
            f"{what} Patient/{rid} is a master; name a member's own record",
            [Issue("error", "business-rule", f"Patient/{rid} is a master", (f"Parameters.{what}",))],
        )
    return found


async def _relink(
    service: FhirService,
    tx: WriteTransaction,
    rid: str,
    body: JsonObject,
    previous: str | None,
    master: str | None,
    changes: list[ResourceChanged],
    write: WriteFn,
    index: ResidentIdIndex | None = None,
) -> JsonObject:
    """Rewrite member record `rid` (now `body`) with `refer` to `master` instead of `previous` (None:
    no master): a hub write, so it is not placed again. Returns the new version's body."""
    links = [
        lk
        for lk in listed(body, "link")
        if previous is None or not (lk.get("type") == "refer" and _ref_id(lk) == previous)
    ]
    if master is not None:
        links.append(_refer(master))
    new = {k: v for k, v in body.items() if k not in ("meta", "link")}
    if links:
        new["link"] = links
    result = await write(
        service, tx, "Patient", rid, new, method="PUT", changes=changes, hub_owned=True, index=index
    )
    return dict(result.stored.body)


async def _write_links(
    service: FhirService,
    tx: WriteTransaction,
    record: StoredVersion,
    master: str | None,
    changes: list[ResourceChanged],
    write: WriteFn,
) -> JsonObject:
    """`_relink` of a stored record, from the master it has now."""
    assert record.body is not None
    previous = await _master_of(tx, record.body)
    return await _relink(service, tx, record.id, record.body, previous, master, changes, write)


async def split_source(
    service: FhirService,
    tx: WriteTransaction,
    source_id: str,
    *,
    changes: list[ResourceChanged],
    write: WriteFn,
    delete: DeleteFn,
    operator: str | None = None,
) -> str:
    """`$mpi-split`: take a member's record out of its person; the master remembers it as not the same
    person, so the next message carrying the same resident ID does not link it again. Returns the master."""
    record = await member_record(tx, source_id, "source-patient")
    master = await _master_of(tx, record.body)
    if master is None:
        raise Unprocessable(
            f"Patient/{source_id} is not linked to a master",
            [Issue("error", "business-rule", "the record is not linked", ("Parameters.source-patient",))],
        )
    await _write_links(service, tx, record, None, changes, write)
    await _recompute(
        service,
        tx,
        master,
        {source_id: None},
        changes,
        write,
        delete,
        None,
        split=source_id,
        operator=operator,
    )
    return master


async def link_records(
    service: FhirService,
    tx: WriteTransaction,
    source_id: str,
    target_id: str,
    *,
    changes: list[ResourceChanged],
    write: WriteFn,
    delete: DeleteFn,
    operator: str | None = None,
) -> str:
    """`$mpi-link`: an operator says a member's record is the person of `target_id` (a master, or
    another member's record). Undoes an earlier split from that person. Returns the master."""
    record = await member_record(tx, source_id, "source-patient")
    target = await tx.current("Patient", target_id)
    if target is None or target.body is None:
        raise NotFound(f"target-patient Patient/{target_id} does not exist")
    previous = await _master_of(tx, record.body)
    joined: dict[str, JsonObject | None] = {}
    if is_master(target.body):
        master = target_id
    elif (target_master := await _master_of(tx, target.body)) is not None:
        master = target_master
    else:
        master = new_resource_id()
        joined[target_id] = await _write_links(service, tx, target, master, changes, write)
    changed: dict[str, JsonObject | None] = {  # the source first: it is what the Provenance names
        source_id: await _write_links(service, tx, record, master, changes, write)
        if previous != master
        else record.body,
        **joined,
    }
    await _recompute(
        service, tx, master, changed, changes, write, delete, None, unsplit=source_id, operator=operator
    )
    if previous is not None and previous != master:
        await _recompute(
            service, tx, previous, {source_id: None}, changes, write, delete, None, operator=operator
        )
    return master


async def join_merged(
    service: FhirService,
    tx: WriteTransaction,
    source_id: str,
    target_id: str,
    *,
    changes: list[ResourceChanged],
    write: WriteFn,
    delete: DeleteFn,
    operator: str | None = None,
) -> None:
    """A merge says two member records are one person: when either has a master, both end in one (the
    target's, else the source's). When neither has one, the merge links alone join them: a duplicate
    within one member needs no master (see the module docstring)."""
    source = await tx.current("Patient", source_id)
    target = await tx.current("Patient", target_id)
    assert source is not None and target is not None
    target_master = await _master_of(tx, target.body)
    source_master = await _master_of(tx, source.body)
    if target_master is not None and source_master != target_master:
        await link_records(
            service, tx, source_id, target_id, changes=changes, write=write, delete=delete, operator=operator
        )
    elif target_master is None and source_master is not None:
        await link_records(
            service, tx, target_id, source_id, changes=changes, write=write, delete=delete, operator=operator
        )
