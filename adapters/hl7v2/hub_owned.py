"""What a merge set on a Patient survives the sender's next demographic update.

ADT A01/A04/A08/A28/A31 carry the whole PID, so their map PUTs the whole Patient: what the HIS knows.
Patient.link (`replaces` / `replaced-by`) and `active: false` on a record merged away were set by an A40
in the hub; the HIS's next A08 must not undo the merge. Before a round's transaction is submitted, the
current versions of the Patients it updates are read with one search (identifiers OR-ed), and those
elements are carried into the new versions. Everything else is the sender's to replace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adapters.base import Sink
from adapters.hl7v2.transaction import Translation, escape_token

JsonObject = dict[str, Any]


async def carry_over(sink: Sink, translations: Sequence[Translation]) -> None:
    """Copy hub-owned elements of the current Patients into the updates `translations` will submit."""
    kept = [(t, k) for t in translations for k in t.kept]
    if not kept:
        return
    criteria = ",".join(sorted({f"{escape_token(k.system)}|{escape_token(k.value)}" for _, k in kept}))
    # Only merged records matter, and they are rare: `link:missing=false` lets the index answer "none"
    # for a whole round of new and ordinary patients without reading any of them.
    found = await sink.search(
        "Patient", [("identifier", criteria), ("link:missing", "false"), ("_count", str(len(kept)))]
    )
    current: dict[tuple[str, str], JsonObject] = {}
    for hit in found.get("entry", []):
        resource = hit.get("resource") or {}
        if resource.get("resourceType") != "Patient":
            continue
        for ident in resource.get("identifier", []):
            current[(ident.get("system", ""), ident.get("value", ""))] = resource
    for translation, k in kept:
        existing = current.get((k.system, k.value))
        if existing is None or "link" not in existing:
            continue
        entry = next(e for e in translation.bundle["entry"] if e.get("fullUrl") == k.full_url)
        update = entry["resource"]
        links = existing["link"]
        update["link"] = links + [lk for lk in update.get("link", []) if lk not in links]
        if any(lk.get("type") == "replaced-by" for lk in existing["link"]):
            update["active"] = existing.get("active", False)
