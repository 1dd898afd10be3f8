"""Finding and rewriting references inside a resource (pure), for transactions and includes."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

ID_PATTERN = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
RELATIVE_REFERENCE = re.compile(
    r"^([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?$"
)


_CONTAINERS = (dict, list)


def iter_reference_holders(value: Any) -> Iterator[dict[str, Any]]:
    """Yield every JSON object that has a string `reference` (a Reference datatype instance), also
    inside contained resources, which are resolved the same way.

    Runs for every resource a transaction writes, so the walk tests each value once against a
    prebuilt tuple of types (a `dict | list` union was rebuilt per value and cost half the walk)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("reference"), str):
                yield item
            for child in item.values():
                if isinstance(child, _CONTAINERS):
                    stack.append(child)
        elif isinstance(item, list):
            for child in item:
                if isinstance(child, _CONTAINERS):
                    stack.append(child)


def rewrite_references(resource: dict[str, Any], resolve: Callable[[str], str | None]) -> None:
    """Replace each `reference` for which `resolve` returns a new value (in place)."""
    for holder in iter_reference_holders(resource):
        new = resolve(holder["reference"])
        if new is not None:
            holder["reference"] = new


def is_valid_id(value: object) -> bool:
    """Also False for a non-string (a client's `"id": true` reaches here from a conditional PUT)."""
    return isinstance(value, str) and ID_PATTERN.match(value) is not None
