"""HL7 v2 tables as data: ConceptMaps (v2 code → FHIR code) loaded once from `v2-tables.json`.

Standards content is data (ARCHITECTURE principle 3): a member whose HIS uses other local codes gets a
ConceptMap entry, not a code change. `lookup` is on the hot path, so the maps are flattened into dicts
the first time they are read.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

_FILE = Path(__file__).with_name("v2-tables.json")


@cache
def _tables() -> dict[str, dict[str, str]]:
    bundle = json.loads(_FILE.read_text(encoding="utf-8"))
    out: dict[str, dict[str, str]] = {}
    for entry in bundle["entry"]:
        cmap = entry["resource"]
        table = cmap["id"].removeprefix("v2-")
        codes: dict[str, str] = {}
        for group in cmap["group"]:
            for element in group["element"]:
                codes[element["code"]] = element["target"][0]["code"]
        out[table] = codes
    return out


@cache
def target_system(table: str) -> str:
    """The FHIR system the table maps into (for Codings built from the result)."""
    bundle = json.loads(_FILE.read_text(encoding="utf-8"))
    for entry in bundle["entry"]:
        if entry["resource"]["id"] == f"v2-{table}":
            return str(entry["resource"]["group"][0]["target"])
    raise KeyError(table)


def lookup(table: str, code: str) -> str | None:
    """The FHIR code for a v2 code, or None when the table has no entry (callers decide the default)."""
    if not code:
        return None
    return _tables()[table].get(code) or _tables()[table].get(code.upper())


def has_table(table: str) -> bool:
    return table in _tables()
