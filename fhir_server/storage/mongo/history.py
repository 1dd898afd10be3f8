"""Compile a HistoryRequest into an aggregation over the `versions` collection (pure).

Newest first by `seq`, keyset on `seq` (`before_seq`), `_since` on the stored microseconds. `_at` keeps,
per resource, the newest version written at or before the instant (a `$group` on (type, id) after a
`seq`-descending sort), exactly as the memory reference does: `_since` narrows the versions first.
"""

from __future__ import annotations

from typing import Any

from fhir_server.storage.protocol import HistoryRequest
from fhir_server.storage.timestamps import instant_to_us

Document = dict[str, Any]


def history_filter(request: HistoryRequest) -> Document:
    """The versions a request covers before `_at` selection and the cursor (also its count without `_at`)."""
    match: Document = {}
    if request.resource_type is not None:
        match["type"] = request.resource_type
    if request.id is not None:
        match["id"] = request.id
    lu: Document = {}
    if request.since is not None:
        lu["$gte"] = instant_to_us(request.since)
    if request.at is not None:
        lu["$lte"] = instant_to_us(request.at)
    if lu:
        match["lu"] = lu
    return match


def history_find(request: HistoryRequest) -> tuple[Document, list[tuple[str, int]], int]:
    """(filter, sort, limit) of a history page without `_at`: a plain find, newest first."""
    assert request.at is None
    match = history_filter(request)
    if request.before_seq is not None:
        match = {**match, "seq": {"$lt": request.before_seq}}
    return match, [("seq", -1)], request.count


def history_pipeline(request: HistoryRequest, *, count_only: bool) -> list[Document]:
    """The aggregation of a history page (or its count) with `_at`."""
    match = history_filter(request)
    stages: list[Document] = [{"$match": match}] if match else []
    if request.at is not None:
        stages += [
            {"$sort": {"seq": -1}},
            {"$group": {"_id": {"t": "$type", "i": "$id"}, "doc": {"$first": "$$ROOT"}}},
            {"$replaceRoot": {"newRoot": "$doc"}},
        ]
    if count_only:
        return [*stages, {"$count": "n"}]
    if request.before_seq is not None:
        stages.append({"$match": {"seq": {"$lt": request.before_seq}}})
    return [*stages, {"$sort": {"seq": -1}}, {"$limit": request.count}]
