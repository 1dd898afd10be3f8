"""The MongoDB document shapes of the store (pure): resources with embedded index entries, versions.

`resources` holds one document per (type, id): the current version (body included, so a search page
needs no second lookup) and its search index entries embedded under `idx`, one array per parameter type
with short field names (they repeat in every element):

    idx.string     {p, v (normalised), r (raw)}          idx.token      {p, s (system), c (code), x (text)}
    idx.reference  {p, t (type), i (id), u (url)}        idx.date       {p, l, h}   (epoch us, [l, h))
    idx.number     {p, l, h}                              idx.quantity   {p, s, c, l, h}
    idx.uri        {p, v}                                 idx.composite  {p, s, c, k, l, h}
    idx.pids       [every pid with at least one entry]    (what `:missing` tests)

`p` is the integer parameter id of `IndexEntries` (scoped to type + code), so one multikey index per
array serves every parameter. Empty arrays are left out. `versions` holds every version (deletes with
body None); both carry `seq`, the global write order.
"""

from __future__ import annotations

from typing import Any

from fhir_server.search.index import IndexEntries
from fhir_server.storage.protocol import NewVersion, StoredVersion
from fhir_server.storage.timestamps import instant_to_us

Document = dict[str, Any]

# IndexEntries attribute -> (embedded array name = the parameter type, element fields in row order)
LAYOUT: dict[str, tuple[str, tuple[str, ...]]] = {
    "strings": ("string", ("p", "v", "r")),
    "tokens": ("token", ("p", "s", "c", "x")),
    "references": ("reference", ("p", "t", "i", "u")),
    "dates": ("date", ("p", "l", "h")),
    "numbers": ("number", ("p", "l", "h")),
    "quantities": ("quantity", ("p", "s", "c", "l", "h")),
    "uris": ("uri", ("p", "v")),
    "composites": ("composite", ("p", "s", "c", "k", "l", "h")),
}


def resource_key(resource_type: str, resource_id: str) -> str:
    """`_id` of a resources document: the natural key, so upserts need no lookup."""
    return f"{resource_type}/{resource_id}"


def version_key(resource_type: str, resource_id: str, version: int) -> str:
    return f"{resource_type}/{resource_id}/_history/{version}"


def embed_index(entries: IndexEntries) -> Document:
    """IndexEntries → the embedded `idx` sub-document (rows become small named documents)."""
    out: Document = {}
    for attr, (name, fields) in LAYOUT.items():
        rows = getattr(entries, attr)
        if rows:
            out[name] = [dict(zip(fields, row, strict=True)) for row in rows]
    out["pids"] = sorted(entries.pids())
    return out


def unembed_index(resource_type: str, idx: Document | None) -> IndexEntries:
    """The inverse of `embed_index`: proves the layout loses nothing (a document can be handed back
    to search/match.py as `IndexEntries`)."""
    entries = IndexEntries(resource_type)
    for attr, (name, fields) in LAYOUT.items():
        rows = getattr(entries, attr)
        for element in (idx or {}).get(name, []):
            rows.append(tuple(element[f] for f in fields))
    return entries


def version_document(version: NewVersion, seq: int) -> Document:
    return {
        "_id": version_key(version.resource_type, version.id, version.version),
        "type": version.resource_type,
        "id": version.id,
        "version": version.version,
        "last_updated": version.last_updated,
        "lu": instant_to_us(version.last_updated),
        "method": version.method,
        "body": version.body,
        "seq": seq,
    }


def resource_document(version: NewVersion, seq: int) -> Document:
    """The current-version document; a delete keeps a tombstone (body None, no index entries)."""
    doc = version_document(version, seq)
    doc["_id"] = resource_key(version.resource_type, version.id)
    doc["deleted"] = version.body is None
    if version.body is not None and version.index is not None:
        doc["idx"] = embed_index(version.index)
    return doc


def to_stored(doc: Document) -> StoredVersion:
    return StoredVersion(
        doc["type"],
        doc["id"],
        int(doc["version"]),
        doc["last_updated"],
        doc["method"],
        doc.get("body"),
        int(doc["seq"]),
    )
