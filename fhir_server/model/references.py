"""Finding and rewriting references inside a resource (pure), for transactions and includes."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
RELATIVE_REFERENCE = re.compile(
    r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?$"
)


def iter_reference_holders(value: Any) -> Iterator[dict[str, Any]]:
    """Yield every JSON object that has a string `reference` (a Reference datatype instance)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("reference")
            if isinstance(ref, str):
                yield item
            for key, child in item.items():
                if key == "contained":
                    # Contained resources' references are resolved the same way.
                    stack.extend(child if isinstance(child, list) else [child])
                elif isinstance(child, dict | list):
                    stack.append(child)
        elif isinstance(item, list):
            stack.extend(c for c in item if isinstance(c, dict | list))


def rewrite_references(resource: dict[str, Any], resolve: Callable[[str], str | None]) -> None:
    """Replace each `reference` for which `resolve` returns a new value (in place)."""
    for holder in iter_reference_holders(resource):
        new = resolve(holder["reference"])
        if new is not None:
            holder["reference"] = new


def is_valid_id(value: object) -> bool:
    """Also False for a non-string (a client's `"id": true` reaches here from a conditional PUT)."""
    return isinstance(value, str) and ID_PATTERN.match(value) is not None
