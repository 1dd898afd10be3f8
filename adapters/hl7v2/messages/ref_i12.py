"""REF^I12/I13/I14 and RRI^I12 (patient referral, 双向转诊) → referral ServiceRequest + tracking Task.

The IG has no referral map; our design:
- ServiceRequest (the referral): identifier from RF1-6 (originating referral id, namespace EI.2, else the
  referring facility), category = "Patient referral" + the 双向转诊 direction (`up` 上转 to a higher-tier
  member, `down` 下转 back to primary care) + RF1-3 referral type, requester = referring Organization
  (MSH-4 of the REF), performer = target Organization (MSH-6), reasonCode = RF1-10 reasons + DG1-3
  diagnoses, priority RF1-2, authoredOn RF1-7, notes from NTE.
- Task (tracks it): focus = the ServiceRequest, for = Patient, requester/owner = the two organizations,
  status from RF1-1 (table 0283: P requested, A accepted, R rejected, E cancelled); I14 cancels.
- RRI^I12 is the target's answer: it only creates the referral when the hub has not seen it (conditional
  create) and updates the Task status; requester and owner swap back, since the RRI sender is the target.
Direction: RF1-3 or RF1-5 valued UP/DOWN (or 上转/下转) wins; otherwise it is derived from the members'
tiers (`Settings.hl7_member_levels`, e.g. village 1, township 2, county 3).
"""

from __future__ import annotations

from typing import Any

from adapters.hl7v2 import datatypes as dtp
from adapters.hl7v2.messages.orm_o01 import patient_url
from adapters.hl7v2.parse import Message, Segment
from adapters.hl7v2.tables import lookup
from adapters.hl7v2.transaction import (
    Context,
    TransactionBuilder,
    Translation,
    TranslationError,
    member_system,
    require,
)

JsonObject = dict[str, Any]

DIRECTION_SYSTEM = "urn:yilian:codesystem:referral-direction"
_DIRECTION_WORDS = {"UP": "up", "上转": "up", "DOWN": "down", "下转": "down", "U": "up", "D": "down"}
_DISPLAY = {"up": "上转 (referral up)", "down": "下转 (referral down)"}


def direction(rf1: Segment, source: str, target: str, levels: dict[str, int] | Any) -> str | None:
    for n in (3, 5):
        for comp in (1, 2):
            word = (
                rf1.get(n, comp).strip().upper() if rf1.get(n, comp).isascii() else rf1.get(n, comp).strip()
            )
            if word in _DIRECTION_WORDS:
                return _DIRECTION_WORDS[word]
    src, dst = levels.get(source), levels.get(target)
    if src is None or dst is None or src == dst:
        return None
    return "up" if dst > src else "down"


def translate(message: Message, ctx: Context) -> Translation:
    tx = TransactionBuilder(message, ctx)
    rf1 = message.first("RF1")
    referral_id = require(rf1, 6, "RF1-6")
    assert rf1 is not None
    subject = patient_url(message, tx, ctx)
    is_answer = message.message_type == "RRI"
    sender, receiver = tx.facility, message.msh.get(6)
    if not receiver:
        raise TranslationError("receiving facility (the referral's other party) is empty", "MSH-6", "101")
    referrer, target = (receiver, sender) if is_answer else (sender, receiver)
    namespace = rf1.get(6, 2) or rf1.get(6, 3) or referrer
    system = member_system(namespace, "referral")
    referrer_url, target_url = tx.organization(referrer), tx.organization(target)

    status_code = rf1.get(1)
    task_status = lookup("0283", status_code) or ("requested" if not status_code else None)
    if task_status is None:
        raise TranslationError(f"referral status '{status_code}' not in table 0283", "RF1-1", "103")
    if message.trigger == "I14":
        task_status = "cancelled"
    sr_status = {"cancelled": "revoked", "rejected": "revoked"}.get(task_status, "active")

    category: list[JsonObject] = [
        {"coding": [{"system": "http://snomed.info/sct", "code": "3457005", "display": "Patient referral"}]}
    ]
    way = direction(rf1, referrer, target, ctx.member_levels)
    if way:
        category.append({"coding": [{"system": DIRECTION_SYSTEM, "code": way, "display": _DISPLAY[way]}]})
    if rf1.raw(3) and rf1.get(3).upper() not in _DIRECTION_WORDS:
        category.append(dtp.cwe(rf1.raw(3), rf1.enc) or {})
    sr: JsonObject = {
        "resourceType": "ServiceRequest",
        "identifier": [{"system": system, "value": referral_id}],
        "status": sr_status,
        "intent": "order",
        "category": [c for c in category if c],
        "code": {
            "coding": [{"system": "http://snomed.info/sct", "code": "3457005", "display": "Patient referral"}]
        },
        "subject": {"reference": subject},
        "requester": {"reference": referrer_url},
        "performer": [{"reference": target_url}],
    }
    priority = lookup("0280", rf1.get(2))
    if priority:
        sr["priority"] = priority
    reasons = [c for c in (dtp.cwe(r, rf1.enc) for r in rf1.reps(10)) if c]
    reasons += [c for c in (dtp.cwe(dg1.raw(3), dg1.enc) for dg1 in message.all("DG1") if dg1.raw(3)) if c]
    if reasons:
        sr["reasonCode"] = reasons
    try:
        authored = dtp.dtm(rf1.get(7), ctx.tz) or dtp.dtm(rf1.get(9), ctx.tz)
    except dtp.DataTypeError as exc:
        raise TranslationError(str(exc), "RF1-7", "102") from exc
    if authored:
        sr["authoredOn"] = authored
    notes = [{"text": nte.get(3)} for nte in message.all("NTE") if nte.get(3)]
    if notes:
        sr["note"] = notes
    sr_url = tx.ensure(sr, system, referral_id) if is_answer else tx.upsert(sr, system, referral_id)

    task_system = member_system(namespace, "referral-task")
    task: JsonObject = {
        "resourceType": "Task",
        "identifier": [{"system": task_system, "value": referral_id}],
        "status": task_status,
        "intent": "order",
        "code": {"coding": [{"system": "http://hl7.org/fhir/CodeSystem/task-code", "code": "fulfill"}]},
        "focus": {"reference": sr_url},
        "for": {"reference": subject},
        "requester": {"reference": referrer_url},
        "owner": {"reference": target_url},
        "lastModified": ctx.received_at.isoformat(timespec="seconds"),
    }
    if way:
        task["businessStatus"] = {
            "coding": [{"system": DIRECTION_SYSTEM, "code": way}],
            "text": _DISPLAY[way],
        }
    if authored:
        task["authoredOn"] = authored
    tx.upsert(task, task_system, referral_id)
    return tx.finish()
