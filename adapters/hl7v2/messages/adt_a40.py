"""ADT A40 (merge patient, structure ADT_A39) → Patient links and moved references; nothing deleted.

The IG has no map for A40; our design:
- the surviving Patient (PID-3) is conditionally updated with `link.type = replaces` → the old Patient;
- the old Patient (MRG-1, same member namespace rules as PID-3) is kept, set `active: false` and
  `link.type = replaced-by` → the survivor (FHIR's merge representation, Patient.link);
- the survivor keeps everything it had: an A40's PID usually carries only the number and a name, and
  its PUT is a sparse update like every PID's (`fhir_server/model/sparse_update.py`): what it does not
  send stays, identifiers of other systems stay (a 居民身份证 registered earlier is never dropped);
- clinical resources whose patient is the old Patient (`MOVED_TYPES`: Encounter, ServiceRequest,
  DiagnosticReport, Observation, ImagingStudy, Task ...) are re-pointed to the survivor in the same
  transaction. Provenance keeps pointing at what it recorded: history is not rewritten.
Finding the old Patient and the referencing resources needs current data, so the pure map leaves a
`complete` step that the pipeline runs with the Sink before submitting.
"""

from __future__ import annotations

from typing import Any

from adapters.base import Sink
from adapters.hl7v2 import datatypes as dtp
from adapters.hl7v2.parse import Message
from adapters.hl7v2.segments import pid
from adapters.hl7v2.transaction import (
    Context,
    TransactionBuilder,
    Translation,
    TranslationError,
    entry_url,
    require,
)
from adapters.identity import patient_identifier_system
from fhir_server.model.person import NOT_MASTER

JsonObject = dict[str, Any]

TRIGGERS = ("A40",)
MOVED_TYPES = (
    ("Encounter", "subject"),
    ("ServiceRequest", "subject"),
    ("DiagnosticReport", "subject"),
    ("Observation", "subject"),
    ("ImagingStudy", "subject"),
    ("Specimen", "subject"),
    ("Condition", "subject"),
    ("Procedure", "subject"),
    ("DocumentReference", "subject"),
    ("MedicationRequest", "subject"),
    ("AllergyIntolerance", "patient"),
    ("Task", "subject"),
)
_FOR_FIELD = {"Task": "for", "AllergyIntolerance": "patient"}


def translate(message: Message, ctx: Context) -> Translation:
    tx = TransactionBuilder(message, ctx)
    pid_seg = message.first("PID")
    require(pid_seg, 3, "PID-3")
    assert pid_seg is not None
    mrg = message.first("MRG")
    require(mrg, 1, "MRG-1")
    assert mrg is not None
    old_value, old_authority, _ = dtp.cx(mrg.reps(1)[0], mrg.enc)
    old_system = patient_identifier_system(old_authority or tx.facility)
    survivor = pid.translate(pid_seg, tx.facility, ctx.tz)
    if (survivor.system, survivor.value) == (old_system, old_value):
        raise TranslationError("MRG-1 names the surviving patient itself", "MRG-1", "102")
    survivor_url = tx.upsert_patient(survivor.resource, survivor.system, survivor.value, survivor.cleared)
    tx.patient_key = survivor.key
    translation = tx.finish()
    merge = {
        "survivor_url": survivor_url,
        "old_system": old_system,
        "old_value": old_value,
    }

    async def complete(sink: Sink, bundle: JsonObject) -> None:
        await _complete(sink, bundle, merge)

    translation.complete = complete
    return translation


async def _complete(sink: Sink, bundle: JsonObject, merge: dict[str, str]) -> None:
    """Add the old Patient's link and the re-pointed references (needs the store's current data)."""
    found = await sink.search(
        "Patient", [("identifier", f"{merge['old_system']}|{merge['old_value']}"), NOT_MASTER]
    )
    olds = [
        e["resource"]
        for e in found.get("entry", [])
        if e.get("resource", {}).get("resourceType") == "Patient"
    ]
    if not olds:
        raise TranslationError("the patient named in MRG-1 is not known to the hub", "MRG-1", "204")
    entries: list[JsonObject] = bundle["entry"]
    moved: list[JsonObject] = []
    survivor = next(e for e in entries if e["fullUrl"] == merge["survivor_url"])
    links = survivor["resource"].setdefault("link", [])
    for old in olds:
        old_ref = f"Patient/{old['id']}"
        replaces = {"other": {"reference": old_ref}, "type": "replaces"}
        if replaces not in links:  # a replayed A40, or links the survivor already carried
            links.append(replaces)
        old = dict(old)
        old.pop("meta", None)
        old["active"] = False
        old["link"] = [lk for lk in old.get("link", []) if lk.get("type") != "replaced-by"] + [
            {"other": {"reference": merge["survivor_url"]}, "type": "replaced-by"}
        ]
        moved.append(
            {"fullUrl": entry_url(old_ref), "resource": old, "request": {"method": "PUT", "url": old_ref}}
        )
        for rtype, param in MOVED_TYPES:
            hits = await sink.search(rtype, [(param, old_ref), ("_count", "1000")])
            for hit in hits.get("entry", []):
                res = dict(hit.get("resource") or {})
                if res.get("resourceType") != rtype:
                    continue
                res.pop("meta", None)
                res[_FOR_FIELD.get(rtype, "subject")] = {"reference": merge["survivor_url"]}
                url = f"{rtype}/{res['id']}"
                moved.append(
                    {"fullUrl": entry_url(url), "resource": res, "request": {"method": "PUT", "url": url}}
                )
    entries[:0] = moved
    provenance = entries[-1]["resource"]
    provenance["target"] += [{"reference": e["request"]["url"]} for e in moved]
