"""Compile a HistoryRequest into SQL over the `version` table (pure). Newest first, keyset on seq."""

from __future__ import annotations

from typing import Any

from fhir_server.storage.protocol import HistoryRequest
from fhir_server.storage.timestamps import instant_to_us


def compile_history(request: HistoryRequest, *, columns: str, count_only: bool) -> tuple[str, list[Any]]:
    where: list[str] = []
    params: list[Any] = []
    if request.resource_type is not None:
        where.append("v.type = ?")
        params.append(request.resource_type)
    if request.id is not None:
        where.append("v.id = ?")
        params.append(request.id)
    if request.since is not None:
        where.append("v.last_updated_us >= ?")
        params.append(instant_to_us(request.since))
    if request.at is not None:
        # The version current at `at`: the newest version of each resource written at or before it.
        where.append(
            "v.seq = (SELECT MAX(v2.seq) FROM version v2 WHERE v2.rid = v.rid AND v2.last_updated_us <= ?)"
        )
        params.append(instant_to_us(request.at))
    if request.before_seq is not None and not count_only:
        where.append("v.seq < ?")
        params.append(request.before_seq)
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    if count_only:
        return f"SELECT COUNT(*) FROM version v{clause}", params
    params.append(request.count)
    return f"SELECT {columns} FROM version v{clause} ORDER BY v.seq DESC LIMIT ?", params
