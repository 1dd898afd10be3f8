"""What a merge set on a Patient survives the sender's next demographic update.

ADT A01/A04/A08/A28/A31 carry the whole PID, so their map PUTs the whole Patient: what the HIS knows.
Patient.link (`replaces` / `replaced-by`) and `active: false` on a record merged away were set by an A40
in the hub; the HIS's next A08 must not undo the merge. Before a round's transaction is submitted, the
current versions of the Patients it updates are read with one search (identifiers OR-ed), and those
elements are carried into the new versions. Everything else is the sender's to replace.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from adapters.base import Sink
from adapters.hl7v2.transaction import Translation, escape_token

JsonObject = dict[str, Any]
RECHECK_S = 300.0
"""How long `MergeWatch` trusts "no merged Patient" before it asks the store again: a bound for writers
that do not pass through this hub's events (another process on the same database file)."""


class MergeWatch:
    """Whether the store may hold a merged Patient (one with `link`): while it holds none, `carry_over`
    needs no search.

    Why: merges are rare, and the search is a round trip to a reader thread on every round (~3 ms of a
    ~17 ms round at 500 messages/s, all of it on the ACK's path). The watch learns of every write through
    the hub's after-commit events (`on_change`, subscribed by whoever wires the listener, as `yilian
    serve` does): a Patient written with `link` ends "none" at once, before the write's caller (an A40
    round, a REST client) gets its answer. It starts knowing nothing (so `carry_over` searches), asks
    the store once, and again every `RECHECK_S`."""

    def __init__(self) -> None:
        self._none_at: float | None = None  # when the store last answered "none" (None: not since)
        self._asked_at = -RECHECK_S
        self._linked_seen = False  # a Patient with `link` was written since the last question began

    async def on_change(self, change: Any) -> None:
        resource = getattr(change, "resource", None) or {}
        if getattr(change, "resource_type", "") == "Patient" and "link" in resource:
            self._none_at = None
            self._linked_seen = True

    async def none_merged(self, sink: Sink) -> bool:
        """True only when no Patient in the store has `link` (False when some has, or when unsure)."""
        now = time.monotonic()
        if self._none_at is not None and now - self._none_at < RECHECK_S:
            return True
        if now - self._asked_at < RECHECK_S:
            return False  # the store answered "merged" lately, or a merge was written since
        self._asked_at, self._linked_seen = now, False
        found = await sink.search("Patient", [("link:missing", "false"), ("_count", "1")])
        if found.get("entry") or self._linked_seen:  # a merge stored, or written while it searched
            self._none_at = None
            return False
        self._none_at = now
        return True


async def carry_over(
    sink: Sink, translations: Sequence[Translation], merges: MergeWatch | None = None
) -> None:
    """Copy hub-owned elements of the current Patients into the updates `translations` will submit."""
    kept = [(t, k) for t in translations for k in t.kept]
    if not kept:
        return
    if merges is not None and await merges.none_merged(sink):
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
