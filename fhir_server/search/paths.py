"""Compile SearchParameter FHIRPath expressions into fast path extractors (once, at registry build).

Evaluating FHIRPath per resource with fhirpathpy costs milliseconds; the write path needs ~0.1 ms per
resource. Nearly every R4 search expression is one of a few shapes (`A.b.c`, `(A.b as T)`, `A.b.as(T)`,
`.ofType(T)`, `.where(resolve() is T)`, `.where(system='phone')`, unions with `|`), so those compile into
lookups over the JSON, with each element's FHIR type resolved from the StructureDefinitions at compile
time (choice elements `value[x]` become the concrete keys `valueQuantity`, ...). Anything else raises
`Unsupported` and the caller falls back to fhirpathpy for that one expression.

A node is (json value, FHIR type code or None, context) where context names the StructureDefinition
path whose children the next step looks up.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

from fhir_server.model.definitions import core_structure_definitions

Node = tuple[Any, str | None, str | None]
Extractor = Callable[[list[Node]], list[Node]]
# (json key, type code, child context)
Candidate = tuple[str, str, str | None]

_FHIRPATH_SYSTEM = "http://hl7.org/fhirpath/System."
_RESOURCE_ROOTS = {"Resource", "DomainResource"}


class Unsupported(Exception):
    """The expression uses FHIRPath this compiler does not handle (caller falls back)."""


@cache
def _elements() -> dict[str, dict[str, Any]]:
    """Every element of every core StructureDefinition keyed by its path ("Observation.value[x]")."""
    out: dict[str, dict[str, Any]] = {}
    for name, sd in core_structure_definitions().items():
        for el in sd.get("snapshot", {}).get("element", []):
            path = el["path"]
            if path.split(".", 1)[0] == name:
                out.setdefault(path, el)
    return out


def _type_code(code: str) -> str:
    return code[len(_FHIRPATH_SYSTEM) :].lower() if code.startswith(_FHIRPATH_SYSTEM) else code


@cache
def children(ctx: str, name: str) -> tuple[Candidate, ...]:
    """The JSON keys a child step `name` can read under context `ctx`, with their types and contexts."""
    els = _elements()
    path = f"{ctx}.{name}"
    el = els.get(path)
    choice = False
    if el is None:
        el = els.get(path + "[x]")
        choice = el is not None
    if el is None:
        return ()
    if "contentReference" in el:
        return ((name, "BackboneElement", el["contentReference"].lstrip("#")),)
    out: list[Candidate] = []
    for t in el.get("type", []):
        code = _type_code(t["code"])
        if code in ("BackboneElement", "Element") and any(
            p.startswith(path + ".") for p in _child_paths(path)
        ):
            child_ctx: str | None = path
        elif code in core_structure_definitions():
            child_ctx = code
        else:
            child_ctx = None
        key = name + code[0].upper() + code[1:] if choice else name
        out.append((key, code, child_ctx))
    return tuple(out)


@cache
def _child_paths(path: str) -> tuple[str, ...]:
    prefix = path + "."
    return tuple(p for p in _elements() if p.startswith(prefix))


def split_top(text: str, sep: str) -> list[str]:
    """Split on `sep` outside parentheses and quotes."""
    parts, depth, quote, start = [], 0, "", 0
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i += len(sep)
            continue
        i += 1
    parts.append(text[start:])
    return parts


def _strip_parens(text: str) -> str:
    """`((A.b as T))` → `A.b as T`: drop parentheses that enclose the whole expression."""
    text = text.strip()
    while text.startswith("(") and text.endswith(")") and _balanced(text[1:-1]):
        text = text[1:-1].strip()
    return text


def _balanced(text: str) -> bool:
    """Whether parentheses in `text` never close more than they opened (so `(a) | (b)` is not wrapped)."""
    depth = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        if depth < 0:
            return False
    return depth == 0


def reference_type(value: Any) -> str | None:
    """The target type of a Reference JSON object (from `type`, else from the reference string)."""
    if not isinstance(value, dict):
        return None
    ref = value.get("reference")
    if isinstance(ref, str) and "/" in ref and not ref.startswith("#"):
        parts = ref.split("/_history/")[0].rstrip("/").split("/")
        if len(parts) >= 2:
            return parts[-2]
    t = value.get("type")
    return t if isinstance(t, str) else None


def _child_step(ctxs: set[str | None], name: str) -> tuple[Extractor, set[str | None], set[str]]:
    table: dict[str | None, tuple[Candidate, ...]] = {}
    for ctx in ctxs:
        if ctx is None:
            raise Unsupported(f"cannot resolve .{name} without a type")
        cands = children(ctx, name)
        if not cands:
            raise Unsupported(f"no element {ctx}.{name}")
        table[ctx] = cands
    new_ctxs = {c[2] for cands in table.values() for c in cands}
    types = {c[1] for cands in table.values() for c in cands}

    def step(nodes: list[Node]) -> list[Node]:
        out: list[Node] = []
        for value, _t, ctx in nodes:
            if type(value) is not dict:
                continue
            for key, code, child in table[ctx]:
                x = value.get(key)
                if x is None:
                    continue
                if type(x) is list:
                    out.extend((item, code, child) for item in x)
                else:
                    out.append((x, code, child))
        return out

    return step, new_ctxs, types


def _as_step(type_name: str) -> Extractor:
    wanted = type_name.lower()

    def step(nodes: list[Node]) -> list[Node]:
        return [n for n in nodes if n[1] is not None and n[1].lower() == wanted]

    return step


def _where_step(condition: str) -> Extractor:
    m = re.fullmatch(r"resolve\(\)\s+is\s+(\w+)", condition.strip())
    if m:
        target = m.group(1)

        def is_type(nodes: list[Node]) -> list[Node]:
            return [n for n in nodes if reference_type(n[0]) == target]

        return is_type
    m = re.fullmatch(r"(\w+)\s*=\s*'([^']*)'", condition.strip())
    if m:
        key, expected = m.group(1), m.group(2)

        def equals(nodes: list[Node]) -> list[Node]:
            return [n for n in nodes if type(n[0]) is dict and n[0].get(key) == expected]

        return equals
    raise Unsupported(f"where({condition})")


def _segments(part: str) -> tuple[list[str], str | None]:
    """The dot-separated steps of one union part, and its trailing `as T` cast if any."""
    part = _strip_parens(part)
    cast: str | None = None
    m = re.fullmatch(r"(.+?)\s+as\s+(\w+)", part, flags=re.S)
    if m:
        part, cast = _strip_parens(m.group(1)), m.group(2)
    return [s.strip() for s in split_top(part, ".")], cast


def _parts_for(expression: str, resource_type: str | None) -> list[str]:
    """The union parts of `expression` that apply to `resource_type` (all of them when None)."""
    parts = []
    for part in split_top(expression, "|"):
        if resource_type is not None:
            head = re.split(r"[.\s(]", _strip_parens(part), maxsplit=1)[0]
            if head != resource_type and head not in _RESOURCE_ROOTS:
                continue
        parts.append(part)
    return parts


def _compile_part(part: str, resource_type: str | None, ctxs: set[str | None]) -> Extractor:
    segments, cast = _segments(part)
    steps: list[Extractor] = []
    if resource_type is not None:
        head = segments.pop(0)
        if head != resource_type and head not in _RESOURCE_ROOTS:
            raise Unsupported(f"expression for {head}, not {resource_type}")
        ctxs = {resource_type}
    for seg in segments:
        if re.fullmatch(r"\w+", seg):
            step, ctxs, _types = _child_step(ctxs, seg)
            steps.append(step)
            continue
        fm = re.fullmatch(r"(as|ofType)\((\w+)\)", seg)
        if fm:
            steps.append(_as_step(fm.group(2)))
            ctxs = {fm.group(2) if fm.group(2) in core_structure_definitions() else None}
            continue
        wm = re.fullmatch(r"where\((.*)\)", seg, flags=re.S)
        if wm:
            steps.append(_where_step(wm.group(1)))
            continue
        raise Unsupported(seg)
    if cast is not None:
        steps.append(_as_step(cast))

    def run(nodes: list[Node]) -> list[Node]:
        for step in steps:
            if not nodes:
                return nodes
            nodes = step(nodes)
        return nodes

    return run


def compile_expression(
    expression: str, resource_type: str | None, ctxs: Iterable[str | None] = ()
) -> Extractor:
    """Compile `expression` for `resource_type` (parts for other types are dropped).

    With `resource_type=None` the expression is relative to nodes of contexts `ctxs` (composite
    components). Raises Unsupported for FHIRPath outside the handled shapes.
    """
    runs = [_compile_part(part, resource_type, set(ctxs)) for part in _parts_for(expression, resource_type)]
    if len(runs) == 1:
        return runs[0]

    def union(nodes: list[Node]) -> list[Node]:
        out: list[Node] = []
        for run in runs:
            out.extend(run(nodes))
        return out

    return union


def compile_root(expression: str, resource_type: str) -> Callable[[Any], list[Node]]:
    """`compile_expression` applied to a whole resource. The most common shape, one element of the
    resource (`Observation.status`, `Patient.identifier`), is read directly: about half of the
    parameters a write evaluates, each saved the generic step machinery. Raises Unsupported like
    `compile_expression`."""
    parts = _parts_for(expression, resource_type)
    if len(parts) == 1:
        segments, cast = _segments(parts[0])
        if len(segments) == 2 and cast is None and re.fullmatch(r"\w+", segments[1]):
            candidates = children(resource_type, segments[1])
            if len(candidates) == 1:
                key, code, child = candidates[0]

                def element(resource: Any) -> list[Node]:
                    value = resource.get(key)
                    if value is None:
                        return []
                    if type(value) is list:
                        return [(item, code, child) for item in value]
                    return [(value, code, child)]

                return element
    run = compile_expression(expression, resource_type)

    def general(resource: Any) -> list[Node]:
        return run([(resource, resource_type, resource_type)])

    return general


def root_keys(expression: str, resource_type: str) -> frozenset[str] | None:
    """The top-level JSON keys that `compile_expression(expression, resource_type)` reads first, or
    None when a part can yield without reading one (it selects the resource itself).

    Why: a resource fills few of its type's parameters (a lab Observation 12 of 40), and an expression
    whose first key is absent finds nothing; testing the keys first skips those evaluations, which were
    over half of all extractor calls on the HL7 ingest path. Call only for an expression that compiled.
    """
    keys: set[str] = set()
    for part in _parts_for(expression, resource_type):
        segments, cast = _segments(part)
        if len(segments) < 2 or not re.fullmatch(r"\w+", segments[1]):
            return None
        candidates = children(resource_type, segments[1])
        # `value.as(Quantity)`, `(value as Quantity)`: only the key of that type can yield
        as_type = re.fullmatch(r"(?:as|ofType)\((\w+)\)", segments[2]) if len(segments) > 2 else None
        wanted = as_type.group(1) if as_type else cast if len(segments) == 2 else None
        if wanted is not None:
            candidates = tuple(c for c in candidates if c[1].lower() == wanted.lower())
        keys.update(candidate[0] for candidate in candidates)
    return frozenset(keys)


def composite_root_keys(expression: str, resource_type: str, second_component: str) -> frozenset[str] | None:
    """`root_keys` for a composite: a part that is the resource itself (`Observation` in
    code-value-quantity) needs a key its second component reads (`valueQuantity`)."""
    keys: set[str] = set()
    for part in _parts_for(expression, resource_type):
        if _strip_parens(part).strip() == resource_type:
            relative = " | ".join(f"{resource_type}.{p.strip()}" for p in split_top(second_component, "|"))
            found = root_keys(relative, resource_type)
        else:
            found = root_keys(part, resource_type)
        if found is None:
            return None
        keys |= found
    return frozenset(keys)
