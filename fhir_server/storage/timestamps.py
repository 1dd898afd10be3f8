"""FHIR instants ↔ integer microseconds since the epoch (the sortable form backends index)."""

from __future__ import annotations

from datetime import UTC, datetime


def instant_to_us(instant: str) -> int:
    dt = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1_000_000)


def now_instant() -> str:
    """The server clock as a FHIR instant with millisecond precision, UTC."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"
