"""The `TerminologyService` role: what validators and operations ask of a terminology source.

A protocol rather than a class so the consortium's own code sets (GB/T national standards, local
catalogues) can sit behind the same questions, alone or layered over the official R4 package.
"""

from __future__ import annotations

from typing import Protocol


def canonical_url(url: str) -> str:
    """Drop a `|version` suffix: the core package holds one version of each canonical resource."""
    return url.split("|", 1)[0]


class TerminologyService(Protocol):
    """Answers code membership questions; `None` means "cannot tell" (never a guess)."""

    def validate_code(self, valueset_url: str, system: str | None, code: str) -> bool | None:
        """Is `code` (from `system`, or any system when None) a member of the ValueSet?"""
        ...

    def expand(self, valueset_url: str) -> frozenset[tuple[str, str]] | None:
        """Every (system, code) in the ValueSet, or None when it cannot be expanded locally."""
        ...
