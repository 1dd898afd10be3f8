"""SMART system scopes: what a Backend Services access token lets its client do, per resource type.

SMART App Launch v1 (`system/Observation.read`, `.write`, `.*`) and v2 (`system/Observation.rs`, `.cud`,
`.cruds`, with the letters in that order) are both read; `*` stands for every type. A scope is kept as
(type, permissions), permissions being letters of `cruds`: v1 `read` is `rs`, `write` is `cud`.
"""

from __future__ import annotations

import re

SmartScope = tuple[str, frozenset[str]]
_SCOPE = re.compile(r"^system/(\*|[A-Z][A-Za-z]+)\.(read|write|\*|c?r?u?d?s?)$")
_V1 = {"read": "rs", "write": "cud", "*": "cruds"}


def parse_scope(text: str) -> SmartScope | None:
    """One `system/...` scope, or None when it is not one (other scopes are ignored, as SMART asks)."""
    found = _SCOPE.match(text)
    if found is None or not found.group(2):
        return None
    letters = _V1.get(found.group(2), found.group(2))
    return found.group(1), frozenset(letters)


def parse_scopes(text: str) -> list[tuple[str, SmartScope]]:
    """(scope as written, parsed) for each `system/` scope of a space-separated list."""
    return [(word, parsed) for word in text.split() if (parsed := parse_scope(word)) is not None]


def covered(scope: SmartScope, allowed: list[SmartScope]) -> bool:
    """Whether `scope` asks for nothing beyond what `allowed` grants."""
    kind, letters = scope
    return any(a_kind in ("*", kind) and letters <= a_letters for a_kind, a_letters in allowed)


def permits(scopes: list[SmartScope], resource_type: str, letter: str) -> bool:
    """Whether `scopes` let their holder `letter` (one of `cruds`) resources of `resource_type`."""
    return any(kind in ("*", resource_type) and letter in letters for kind, letters in scopes)
