"""Checks for FHIR primitive values in JSON: the JSON kind, the regex the R4 StructureDefinition declares,
and the few rules a regex cannot say (real calendar dates, 32-bit integers, finite decimals).

The regexes come from the primitive types' StructureDefinitions (`<type>.value` element, extension
`http://hl7.org/fhir/StructureDefinition/regex`), so they are data. They are compiled with `re.ASCII`
because the spec's `\\s` is XML-Schema/Java whitespace: a Chinese full-width space (U+3000) in a name is
content, not whitespace. base64Binary is checked without its regex, which backtracks badly on large
attachments.
"""

from __future__ import annotations

import binascii
import calendar
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fhir_server.model.definitions import JsonObject
from profiles.structure import PrimitiveCheck

REGEX_EXTENSION = "http://hl7.org/fhir/StructureDefinition/regex"

_INT_TYPES = frozenset({"integer", "positiveInt", "unsignedInt"})
_DATE_PREFIX = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_INT32 = (-(2**31), 2**31 - 1)


@dataclass(frozen=True)
class PrimitiveType:
    name: str
    check: PrimitiveCheck


def _calendar_ok(text: str) -> bool:
    match = _DATE_PREFIX.match(text)
    if match is None:
        return True
    year, month, day = (int(g) for g in match.groups())
    return day <= calendar.monthrange(year, month)[1]


KNOWN_LIMIT = 4096
"""Values a string check remembers as valid before it starts afresh (`_string_check`)."""
KNOWN_LENGTH = 64


def _string_check(name: str, regex: re.Pattern[str] | None) -> PrimitiveCheck:
    """Why it remembers valid values: most strings a hub validates repeat (code systems, codes, units,
    displays, dates), and a set lookup is a fraction of the regex. Only short values are kept, at most
    `KNOWN_LIMIT` of them; the set is the check's only state, and a value in it is valid for good."""
    dated = name in ("date", "dateTime", "instant")
    known: set[str] = set()

    def check(value: Any) -> str | None:
        if value.__class__ is str:
            if value in known:
                return None
        elif not isinstance(value, str):
            return f"expected a JSON string for {name}, got {_kind(value)}"
        if value == "":
            return f"empty string is not a valid {name} (leave the element out instead)"
        if regex is not None and regex.fullmatch(value) is None:
            return f"'{_clip(value)}' is not a valid {name}"
        if dated and not _calendar_ok(value):
            return f"'{_clip(value)}' is not a valid {name}: no such calendar day"
        if len(value) <= KNOWN_LENGTH:
            if len(known) >= KNOWN_LIMIT:
                known.clear()
            known.add(value)
        return None

    return check


def _base64_check(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a JSON string for base64Binary, got {_kind(value)}"
    try:
        binascii.a2b_base64("".join(value.split()).encode("ascii"), strict_mode=True)
    except (binascii.Error, UnicodeEncodeError):
        return "not valid base64"
    return None


def _xhtml_check(value: Any) -> str | None:
    if not isinstance(value, str):
        return f"expected a JSON string for xhtml, got {_kind(value)}"
    if not value.lstrip().startswith("<div"):
        return "narrative XHTML must be a single <div> element"
    return None


def _boolean_check(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    return f"expected JSON true or false for boolean, got {_kind(value)}"


def _int_check(name: str) -> PrimitiveCheck:
    low = {"positiveInt": 1, "unsignedInt": 0}.get(name, _INT32[0])

    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return f"{name} must be written without a fraction or exponent"
            return f"expected a JSON integer for {name}, got {_kind(value)}"
        if not low <= value <= _INT32[1]:
            return f"{value} is out of range for {name}"
        return None

    return check


def _decimal_check(value: Any) -> str | None:
    # Decimal too: a parser may keep precision with parse_float=Decimal (FHIR decimals carry precision)
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return f"expected a JSON number for decimal, got {_kind(value)}"
    if isinstance(value, float | Decimal) and not math.isfinite(value):
        return "decimal must be finite"
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _declared_regex(sd: JsonObject) -> re.Pattern[str] | None:
    for element in sd.get("snapshot", {}).get("element", ()):
        if element.get("path") != f"{sd['type']}.value":
            continue
        for type_ in element.get("type", ()):
            for ext in type_.get("extension", ()):
                if ext.get("url") == REGEX_EXTENSION:
                    return re.compile(ext["valueString"], re.ASCII)
    return None


def compile_primitives(structure_definitions: dict[str, JsonObject]) -> dict[str, PrimitiveType]:
    """One checker per primitive type named in the core StructureDefinitions."""
    out: dict[str, PrimitiveType] = {}
    for sd in structure_definitions.values():
        if sd.get("kind") != "primitive-type":
            continue
        name: str = sd["type"]
        check: PrimitiveCheck
        if name == "boolean":
            check = _boolean_check
        elif name in _INT_TYPES:
            check = _int_check(name)
        elif name == "decimal":
            check = _decimal_check
        elif name == "base64Binary":
            check = _base64_check
        elif name == "xhtml":
            check = _xhtml_check
        else:
            check = _string_check(name, _declared_regex(sd))
        out[name] = PrimitiveType(name, check)
    return out
