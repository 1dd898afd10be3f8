"""FHIR instants ↔ integer microseconds since the epoch (the sortable form backends index)."""

from __future__ import annotations

from datetime import UTC, datetime

from fhir_server.search.dates import date_range


def instant_to_us(instant: str) -> int:
    """Start of an instant in UTC microseconds: the exact conversion search uses for `_lastUpdated`."""
    rng = date_range(instant)
    if rng is None:
        raise ValueError(f"not a FHIR instant: {instant!r}")
    return rng[0]


def now_instant() -> str:
    """The server clock as a FHIR instant with millisecond precision, UTC."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
