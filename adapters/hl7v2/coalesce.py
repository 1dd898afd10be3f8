"""Merging several messages' transactions into one, the lever for ingest throughput.

The Sink's per-transaction cost (a store transaction, its commit) dominates the per-message work, so the
pipeline submits the Bundles of consecutive messages about *different* patients as one transaction.
Entries with the same fullUrl (the same member Organization or Practitioner, by construction of
`transaction.entry_url`) are written once. Per-patient order is kept because a group is cut as soon as a
patient repeats, and groups are submitted in arrival order. If the merged transaction fails, the caller
falls back to submitting each message alone, so one bad message never fails its neighbours.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

JsonObject = dict[str, Any]


def groups(keys: Sequence[str | None], max_size: int) -> list[list[int]]:
    """Indices cut into runs in which no patient key repeats (None = cannot be merged: alone)."""
    out: list[list[int]] = []
    current: list[int] = []
    seen: set[str] = set()
    for i, key in enumerate(keys):
        if key is None or key in seen or len(current) >= max_size:
            if current:
                out.append(current)
            current, seen = [], set()
        if key is None:
            out.append([i])
            continue
        current.append(i)
        seen.add(key)
    if current:
        out.append(current)
    return out


def merge(bundles: Sequence[JsonObject]) -> JsonObject:
    """One transaction with every entry of `bundles`, shared entries (same fullUrl) once."""
    if len(bundles) == 1:
        return bundles[0]
    entries: list[JsonObject] = []
    seen: set[str] = set()
    for bundle in bundles:
        for entry in bundle["entry"]:
            url = entry.get("fullUrl")
            if url:
                if url in seen:
                    continue
                seen.add(url)
            entries.append(entry)
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}
