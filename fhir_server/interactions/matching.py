"""Scoring two Patient records as one person: pure, so `$match`, review lists and tests share one rule.

The rule (weights and thresholds are `MatchRules`, set from `YILIAN_MATCH_*` settings):
- **居民身份证 decides when both records carry one**: the same valid number is `certain` (score 1.0);
  two different valid numbers are `certainly-not` (score 0.0), whatever else agrees.
- Otherwise a weighted sum over what the probe says, each feature scored in [0, 1]:
  name 0.35 (same folded name or same pinyin reading 1.0, else rapidfuzz similarity of the readings,
  so 李秀兰 / 李秀莲 score high and 张三 / Zhang San score 1.0), birth date 0.25 (same day 1.0, same
  month 0.3), gender 0.10, phone 0.20 (same digits, ignoring +86 and separators), address 0.10
  (rapidfuzz token-set similarity of the address text); the weights add up to 1.
  A feature the probe lacks adds nothing, so name and birth date alone reach at most 0.60, and name
  and phone (how a desk confirms a caller) 0.55: `possible`, never more.
- Grades: `probable` from `probable` (0.85), `possible` from `possible` (0.55); below that no match.
  Only `certain` ever links records by itself; `probable` and `possible` are for review.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz

from fhir_server.model.person import listed
from terminology import chinese_names, cn_resident_id

JsonObject = dict[str, Any]
_NOT_DIGITS = re.compile(r"\D+")


@dataclass(frozen=True, slots=True)
class MatchRules:
    possible: float = 0.55
    probable: float = 0.85
    name: float = 0.35
    birth_date: float = 0.25
    gender: float = 0.10
    phone: float = 0.20
    address: float = 0.10


@dataclass(frozen=True, slots=True)
class Match:
    score: float
    grade: str  # certain | probable | possible | certainly-not | none (the match-grade codes, and none)


def resident_ids(resource: JsonObject) -> set[str]:
    """The valid 居民身份证 numbers a Patient carries, normalised; not those marked `use: old` (a number
    that came with a record merged into this one: kept for lookup, not a claim about the person)."""
    found = set()
    for ident in listed(resource, "identifier"):
        if (
            isinstance(ident, dict)
            and ident.get("system") == cn_resident_id.SYSTEM
            and ident.get("use") != "old"
        ):
            value = ident.get("value")
            if isinstance(value, str) and cn_resident_id.is_valid(value):
                found.add(cn_resident_id.normalise(value))
    return found


def phones(resource: JsonObject) -> set[str]:
    """Phone numbers as digits only, without a leading 86 country code on 13-digit mobile numbers."""
    found = set()
    for telecom in listed(resource, "telecom"):
        if isinstance(telecom, dict) and telecom.get("system") in (None, "phone", "sms"):
            digits = _NOT_DIGITS.sub("", str(telecom.get("value") or ""))
            if len(digits) == 13 and digits.startswith("86"):
                digits = digits[2:]
            if len(digits) >= 7:
                found.add(digits)
    return found


def _address_text(resource: JsonObject) -> str:
    parts = []
    for address in listed(resource, "address"):
        if not isinstance(address, dict):
            continue
        if isinstance(address.get("text"), str):
            parts.append(address["text"])
        else:
            fields = [address.get(k) for k in ("state", "city", "district")] + listed(address, "line")
            parts.append(" ".join(str(f) for f in fields if isinstance(f, str)))
    return chinese_names.fold(" ".join(parts))


def _name_score(probe: JsonObject, candidate: JsonObject) -> float | None:
    mine, theirs = chinese_names.names_of(probe), chinese_names.names_of(candidate)
    if not mine:
        return None
    best = 0.0
    for a in mine:
        for b in theirs:
            if chinese_names.fold(a) == chinese_names.fold(b):
                return 1.0
            ra, rb = chinese_names.reading(a), chinese_names.reading(b)
            if ra and ra == rb:
                return 1.0
            best = max(best, fuzz.ratio(ra, rb) / 100.0)
    return best


def _birth_date_score(probe: JsonObject, candidate: JsonObject) -> float | None:
    mine, theirs = probe.get("birthDate"), candidate.get("birthDate")
    if not isinstance(mine, str) or not mine:
        return None
    if not isinstance(theirs, str):
        return 0.0
    if mine[:10] == theirs[:10]:
        return 1.0
    return 0.3 if mine[:7] == theirs[:7] else 0.0


def score(probe: JsonObject, candidate: JsonObject, rules: MatchRules) -> Match:
    """How surely `candidate` is the person `probe` describes."""
    mine, theirs = resident_ids(probe), resident_ids(candidate)
    if mine and theirs:
        return Match(1.0, "certain") if mine & theirs else Match(0.0, "certainly-not")
    total = 0.0
    name = _name_score(probe, candidate)
    if name is not None:
        total += rules.name * name
    birth = _birth_date_score(probe, candidate)
    if birth is not None:
        total += rules.birth_date * birth
    gender = probe.get("gender")
    if isinstance(gender, str) and gender in ("male", "female"):
        total += rules.gender * (1.0 if candidate.get("gender") == gender else 0.0)
    my_phones = phones(probe)
    if my_phones:
        total += rules.phone * (1.0 if my_phones & phones(candidate) else 0.0)
    my_address = _address_text(probe)
    if my_address:
        total += rules.address * fuzz.token_set_ratio(my_address, _address_text(candidate)) / 100.0
    total = round(min(total, 0.99), 4)  # only a resident ID makes a match certain
    if total >= rules.probable:
        return Match(total, "probable")
    if total >= rules.possible:
        return Match(total, "possible")
    return Match(total, "none")
