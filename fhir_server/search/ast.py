"""The search plan: what a FHIR search asks for, independent of any backend (frozen dataclasses).

OWNED BY THE SEARCH WORK: this placeholder only fixes the names the storage protocol imports.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SearchQuery:
    resource_type: str | None
