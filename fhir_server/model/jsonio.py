"""JSON in and out: orjson for speed, with the guards a public endpoint needs (depth, object root)."""

from __future__ import annotations

from typing import Any

import orjson

from fhir_server.errors import BadRequest

JsonObject = dict[str, Any]


def parse_json_object(raw: bytes, *, max_depth: int, what: str = "request body") -> JsonObject:
    """Parse bytes into a JSON object; malformed JSON, non-objects and deep nesting are 400s."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"The {what} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise BadRequest(f"The {what} must be a JSON object, not {type(data).__name__}")
    depth = json_depth(data, max_depth)
    if depth > max_depth:
        raise BadRequest(f"The {what} nests deeper than the limit of {max_depth} levels")
    return data


def json_depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, stopping early once `limit` is exceeded (iterative: no recursion)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > deepest:
            deepest = depth
            if deepest > limit:
                return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return deepest


def dumps(value: Any, *, pretty: bool = False) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 if pretty else 0)
