"""Typed index entries extracted from a resource at write time.

OWNED BY THE SEARCH WORK: this placeholder only fixes the names the storage protocol imports.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class IndexEntries:
    resource_type: str
