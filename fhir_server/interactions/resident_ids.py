"""Which current Patients carry which valid 居民身份证: the lookups behind certain matches
(`person.place_source`), and a per-section index so a transaction searches once, not per Patient.

Numbers marked `use: old` are not counted (`matching.resident_ids`).
"""

from __future__ import annotations

from typing import Any

from fhir_server.interactions.matching import resident_ids
from fhir_server.interactions.service import FhirService
from fhir_server.search.parse import parse_search
from fhir_server.storage.protocol import WriteTransaction
from terminology import cn_resident_id

JsonObject = dict[str, Any]

MAX_CERTAIN = 50
"""At most this many records share one resident ID (one person at every member, merged-away ones too)."""


def _resident_ids(resource: JsonObject) -> list[str]:
    return sorted(resident_ids(resource))


Holder = tuple[str, JsonObject]
"""A current Patient carrying a resident ID: its id and body."""


async def search_holders(service: FhirService, tx: WriteTransaction, numbers: set[str]) -> list[Holder]:
    criteria = ",".join(f"{cn_resident_id.SYSTEM}|{n}" for n in sorted(numbers))
    query = parse_search("Patient", [("identifier", criteria)], service.registry, strict=True)
    found = []
    for _, rid in sorted(await tx.search_ids(query, MAX_CERTAIN * len(numbers))):
        hit = await tx.current("Patient", rid)
        if hit is not None and hit.body is not None:
            found.append((rid, hit.body))
    return found


class ResidentIdIndex:
    """Which Patients carry which resident IDs, for one write section: one search before the section's
    first write instead of one per Patient it writes.

    Why: a search inside a section waits until everything the section has buffered is written (SQLite:
    the writer thread idle), so one search per registration in an HL7 round made the round wait for
    its own inserts dozens of times. `prefetch` asks once for every number the section's Patients carry;
    `wrote` keeps the answers true through every Patient write and delete of the section. A number that
    was not prefetched is searched as before."""

    def __init__(self) -> None:
        self._prefetched: set[str] = set()
        self._holders: dict[str, dict[str, JsonObject]] = {}
        self._numbers_of: dict[str, list[str]] = {}

    async def prefetch(self, service: FhirService, tx: WriteTransaction, resources: list[JsonObject]) -> None:
        numbers = {n for r in resources if r.get("resourceType") == "Patient" for n in _resident_ids(r)}
        if not numbers:
            return
        for rid, body in await search_holders(service, tx, numbers):
            self.wrote(rid, body)
        self._prefetched |= numbers

    def wrote(self, rid: str, body: JsonObject | None) -> None:
        """Patient `rid` is now `body` (None: deleted)."""
        for number in self._numbers_of.pop(rid, ()):
            self._holders[number].pop(rid, None)
        numbers = _resident_ids(body) if body is not None else []
        if body is not None and numbers:
            self._numbers_of[rid] = numbers
            for number in numbers:
                self._holders.setdefault(number, {})[rid] = body

    def holders(self, numbers: list[str]) -> list[Holder] | None:
        """The current Patients carrying any of `numbers`, or None when one was not prefetched."""
        if not self._prefetched.issuperset(numbers):
            return None
        found = {rid: body for n in numbers for rid, body in self._holders.get(n, {}).items()}
        return sorted(found.items())


async def certain_matches(
    service: FhirService,
    tx: WriteTransaction,
    source_id: str,
    numbers: list[str],
    index: ResidentIdIndex | None,
) -> list[Holder]:
    """Current Patients other than `source_id` carrying one of the resident ID `numbers`."""
    known = index.holders(numbers) if index is not None else None
    found = known if known is not None else await search_holders(service, tx, set(numbers))
    return [(rid, body) for rid, body in found if rid != source_id]
