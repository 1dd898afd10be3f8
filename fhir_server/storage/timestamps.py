"""FHIR instants ↔ integer microseconds since the epoch (the sortable form backends index)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from functools import lru_cache

from fhir_server.search.dates import date_range


@lru_cache(maxsize=256)
def instant_to_us(instant: str) -> int:
    """Start of an instant in UTC microseconds: the exact conversion search uses for `_lastUpdated`.

    Cached: every version written converts its lastUpdated, and the writes of one millisecond (a
    transaction's resources, an HL7 round) share the same instant."""
    rng = date_range(instant)
    if rng is None:
        raise ValueError(f"not a FHIR instant: {instant!r}")
    return rng[0]


_last_instant: tuple[int, str] = (-1, "")


def now_instant() -> str:
    """The server clock as a FHIR instant with millisecond precision, UTC.

    Formatted once per millisecond: a busy transaction stamps dozens of resources in the same one."""
    global _last_instant
    millis = time.time_ns() // 1_000_000
    last = _last_instant  # one tuple, read and replaced whole: safe across threads
    if last[0] == millis:
        return last[1]
    now = datetime.fromtimestamp(millis // 1000, UTC)
    text = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{millis % 1000:03d}Z"
    _last_instant = (millis, text)
    return text
