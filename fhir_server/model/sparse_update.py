"""A sparse update: HL7 v2 update semantics carried in a FHIR transaction entry.

In v2 a field that is absent from an A08/A31 means "no change" and a field sent as `""` means "delete
this value", while a FHIR PUT replaces the resource whole. The HL7 adapter therefore marks its Patient
PUTs with two extensions on `Bundle.entry.request` (an Element, so R4 allows them, and they travel over
an HTTP Sink too):
- `update-keeps-absent-elements` (valueBoolean true): an element the body does not have keeps its
  current value; `identifier` is merged by system (the body's identifiers replace those of the same
  systems, the others stay: a sparse A08 without PID-19 keeps the 居民身份证); an identifier a merge
  kept as `use: old` (the MRN of a record merged into this one) stays, and a message naming it (the
  member still sends the old MRN) neither repeats it nor replaces the member's current MRN;
- `update-clears-element` (valueString, repeating): an element the sender deleted (`""`), removed.
Everything else in the body replaces what is stored, as a PUT does. The interactions layer applies it
to the current version inside the write section (`write.write_resource`), so nothing is read outside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

JsonObject = dict[str, Any]

KEEPS_ABSENT_URL = "http://yilian.org.cn/fhir/StructureDefinition/update-keeps-absent-elements"
CLEARS_URL = "http://yilian.org.cn/fhir/StructureDefinition/update-clears-element"
CHOICE_STEMS = ("deceased", "multipleBirth")
"""Patient's choice elements: a value of one type replaces a stored value of another."""


@dataclass(frozen=True, slots=True)
class SparseUpdate:
    cleared: frozenset[str] = frozenset()


def request_extensions(cleared: list[str]) -> list[JsonObject]:
    """The `Bundle.entry.request.extension` list marking a sparse update."""
    return [{"url": KEEPS_ABSENT_URL, "valueBoolean": True}] + [
        {"url": CLEARS_URL, "valueString": name} for name in cleared
    ]


def from_request(request: Any) -> SparseUpdate | None:
    """The sparse update an entry's request asks for, or None for an ordinary (whole) update."""
    extensions = request.get("extension") if isinstance(request, dict) else None
    if not isinstance(extensions, list):
        return None
    keeps = any(
        isinstance(e, dict) and e.get("url") == KEEPS_ABSENT_URL and e.get("valueBoolean") is True
        for e in extensions
    )
    if not keeps:
        return None
    cleared = {
        e["valueString"]
        for e in extensions
        if isinstance(e, dict) and e.get("url") == CLEARS_URL and isinstance(e.get("valueString"), str)
    }
    return SparseUpdate(frozenset(cleared))


def _stem(key: str) -> str:
    bare = key.lstrip("_")
    return next((s for s in CHOICE_STEMS if bare.startswith(s)), bare)


def apply(current: JsonObject, body: JsonObject, update: SparseUpdate) -> JsonObject:
    """The new content: `current` with what `body` sends replaced and what `update` clears removed."""
    given = {_stem(k) for k in body if k not in ("resourceType", "id", "meta")}
    gone = given | set(update.cleared)
    merged = {k: v for k, v in current.items() if k != "meta" and _stem(k) not in gone}
    merged.update(body)
    if isinstance(body.get("identifier"), list) and "identifier" not in update.cleared:
        stored = [i for i in current.get("identifier") or [] if isinstance(i, dict)]
        old = {_key(i) for i in stored if i.get("use") == "old"}
        sent = [i for i in body["identifier"] if not (isinstance(i, dict) and _key(i) in old)]
        systems = {i.get("system") for i in sent if isinstance(i, dict)}
        kept = [i for i in stored if i.get("use") == "old" or i.get("system") not in systems]
        merged["identifier"] = [*sent, *kept]
    return merged


def _key(identifier: JsonObject) -> tuple[Any, Any]:
    return identifier.get("system"), identifier.get("value")
