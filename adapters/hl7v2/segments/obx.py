"""OBX → Observation (v2-to-FHIR IG OBX[Observation] map): NM ST TX FT CE CWE CNE SN DT DTM TS TM NR.

Numbers keep their sent text precision where JSON allows (int stays int). SN follows the IG: comparator +
number → Quantity with comparator, num1-num2 → Range, num1:num2 or num1/num2 → Ratio. OBX-7 ranges like
"3.5-5.5", "<10", ">=60" become referenceRange low/high with the units of OBX-6; anything else stays text.
"""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo

from adapters.hl7v2 import datatypes as dtp
from adapters.hl7v2.parse import Segment, components
from adapters.hl7v2.tables import lookup
from adapters.hl7v2.transaction import TranslationError

JsonObject = dict[str, Any]
_INTERP = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
_RANGE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*[-~–]\s*(-?\d+(?:\.\d+)?)\s*$")
_BOUND = re.compile(r"^\s*(<=|>=|<|>|≤|≥)\s*(-?\d+(?:\.\d+)?)\s*$")


def _units(obx: Segment) -> JsonObject:
    p = obx.comps(6)
    if not p or not any(p):
        return {}
    code, text, system = (p + ["", "", ""])[:3]
    out: JsonObject = {"unit": text or code}
    if code:
        out["code"] = code
        if system.upper() == "UCUM":
            out["system"] = "http://unitsofmeasure.org"
    return out


def _quantity(text: str, units: JsonObject, location: str) -> JsonObject:
    try:
        return {"value": dtp.number(text), **units}
    except dtp.DataTypeError as exc:
        raise TranslationError(str(exc), location, "102") from exc


def _value(obx: Segment, tz: ZoneInfo) -> tuple[str, Any] | None:
    vtype = obx.get(2)
    reps = obx.reps(5)
    if not reps or not any(reps):
        return None
    loc = "OBX-5"
    enc = obx.enc
    if vtype == "NM":
        return "valueQuantity", _quantity(components(reps[0], enc)[0], _units(obx), loc)
    if vtype in ("ST", "TX", "FT"):
        return "valueString", "\n".join(
            enc.repetition.join(components(r, enc)) if vtype != "FT" else components(r, enc)[0] for r in reps
        )
    if vtype in ("CE", "CWE", "CNE", "IS"):
        return "valueCodeableConcept", dtp.cwe(reps[0], enc)
    if vtype in ("DT", "DTM", "TS"):
        try:
            return "valueDateTime", dtp.dtm(components(reps[0], enc)[0], tz)
        except dtp.DataTypeError as exc:
            raise TranslationError(str(exc), loc, "102") from exc
    if vtype == "TM":
        t = components(reps[0], enc)[0]
        return "valueTime", f"{t[0:2]}:{t[2:4] or '00'}:{t[4:6] or '00'}"
    if vtype in ("SN", "NR"):
        p = components(reps[0], enc) + ["", "", "", ""]
        units = _units(obx)
        if vtype == "NR":
            p = ["", p[0], "-", p[1]]
        comparator, num1, sep, num2 = p[:4]
        if sep in ("-", "") and num2 and num1:
            return "valueRange", {"low": _quantity(num1, units, loc), "high": _quantity(num2, units, loc)}
        if sep in (":", "/") and num2:
            return "valueRatio", {
                "numerator": _quantity(num1, units, loc),
                "denominator": _quantity(num2, {}, loc),
            }
        qty = _quantity(num1, units, loc)
        if comparator in ("<", ">", "<=", ">="):
            qty["comparator"] = comparator
        elif comparator and comparator != "=":
            raise TranslationError(
                f"SN comparator '{comparator}' is not one of < > <= >= =", "OBX-5.1", "102"
            )
        return "valueQuantity", qty
    raise TranslationError(f"OBX value type '{vtype}' is not supported", "OBX-2", "102")


def reference_range(text: str, units: JsonObject) -> JsonObject:
    out: JsonObject = {"text": text}
    m = _RANGE.match(text)
    if m:
        out["low"] = {"value": dtp.number(m.group(1)), **units}
        out["high"] = {"value": dtp.number(m.group(2)), **units}
        return out
    m = _BOUND.match(text)
    if m:
        side = "high" if m.group(1) in ("<", "<=", "≤") else "low"
        out[side] = {"value": dtp.number(m.group(2)), **units}
    return out


def translate(obx: Segment, tz: ZoneInfo) -> JsonObject:
    """Observation content for one OBX (subject, basedOn, identifier are added by the message map)."""
    code = dtp.cwe(obx.raw(3), obx.enc) if obx.raw(3) else None
    if code is None:
        raise TranslationError("observation identifier is empty", "OBX-3", "101")
    status = lookup("0085", obx.get(11) or "F")
    if status is None:
        raise TranslationError(f"result status '{obx.get(11)}' not in table 0085", "OBX-11", "103")
    obs: JsonObject = {"resourceType": "Observation", "status": status, "code": code}
    value = _value(obx, tz)
    if value is not None and value[1] is not None:
        obs[value[0]] = value[1]
    elif obx.get(11) != "X":
        obs["dataAbsentReason"] = {
            "coding": [
                {"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "unknown"}
            ]
        }
    if obx.get(7):
        obs["referenceRange"] = [reference_range(obx.get(7), _units(obx))]
    flags = []
    for rep in obx.reps(8):
        flag = components(rep, obx.enc)[0]
        code_ = lookup("0078", flag)
        if code_ is None:
            raise TranslationError(f"abnormal flag '{flag}' not in table 0078", "OBX-8", "103")
        flags.append(
            {"coding": [{"system": _INTERP, "code": code_, "display": lookup("0078-display", flag) or code_}]}
        )
    if flags:
        obs["interpretation"] = flags
    try:
        effective = dtp.dtm(obx.get(14), tz)
    except dtp.DataTypeError as exc:
        raise TranslationError(str(exc), "OBX-14", "102") from exc
    if effective:
        obs["effectiveDateTime"] = effective
    if obx.raw(17):
        obs["method"] = dtp.cwe(obx.reps(17)[0], obx.enc)
    return obs
