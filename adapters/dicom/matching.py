"""DICOM attribute matching (PS3.4 C.2.2.2), pure: one function per matching type.

Used by C-FIND, Modality Worklist and QIDO-RS alike, so the three answer the same query the same way.
Records are flat `{keyword: value}` dicts of strings (multi-valued attributes joined with backslash).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache

from pydicom.datadict import dictionary_VR

_RANGE_VRS = frozenset({"DA", "TM", "DT"})
_NO_WILDCARD_VRS = frozenset({"UI", "DA", "TM", "DT", "SQ", "US", "UL", "SS", "SL", "FL", "FD", "IS", "DS"})


@lru_cache(maxsize=1024)
def vr_of(keyword: str) -> str:
    """VR of a keyword; `Sequence.Keyword` (flattened sequence items) takes the item keyword's VR."""
    try:
        return str(dictionary_VR(keyword.rpartition(".")[2]))
    except (KeyError, ValueError):
        return "LO"


def matches(record: Mapping[str, str], criteria: Mapping[str, str]) -> bool:
    """True when every non-empty criterion matches the record's value for that keyword."""
    return all(match_value(keyword, wanted, record.get(keyword, "")) for keyword, wanted in criteria.items())


def match_value(keyword: str, wanted: str, actual: str) -> bool:
    if wanted in ("", "*"):
        return True  # universal matching
    vr = vr_of(keyword)
    candidates = actual.split("\\") if actual else [""]
    if vr == "UI":
        return any(c in wanted.split("\\") for c in candidates)  # list of UID matching
    if vr in _RANGE_VRS and "-" in wanted:
        return any(_in_range(vr, wanted, c) for c in candidates if c)
    alternatives = wanted.split("\\")
    if vr not in _NO_WILDCARD_VRS and any(ch in wanted for ch in "*?"):
        values = _pn_groups(candidates) if vr == "PN" else candidates
        return any(_wildcard(alt, vr == "PN").match(c) for alt in alternatives for c in values)
    if vr == "PN":
        return any(alt.casefold() == c.casefold() for alt in alternatives for c in _pn_groups(candidates))
    return any(alt == c for alt in alternatives for c in candidates)


def _pn_groups(candidates: list[str]) -> list[str]:
    """A PN matches on the whole value or on any one of its component groups (alphabetic/ideographic)."""
    out: list[str] = []
    for c in candidates:
        out.append(c)
        out.extend(g for g in c.split("=") if g)
    return out


@lru_cache(maxsize=256)
def _wildcard(pattern: str, fold: bool) -> re.Pattern[str]:
    body = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(f"^{body}$", re.IGNORECASE | re.DOTALL if fold else re.DOTALL)


def _in_range(vr: str, wanted: str, actual: str) -> bool:
    low, _, high = wanted.partition("-")
    value = _normalise(vr, actual)
    if low and value < _normalise(vr, low):
        return False
    return not (high and value > _normalise(vr, high, upper=True))


def _normalise(vr: str, value: str, upper: bool = False) -> str:
    v = value.strip().replace(":", "").replace("-", "")
    if vr == "TM":
        digits = v.split(".")[0]
        return digits.ljust(6, "9" if upper else "0")
    return v
