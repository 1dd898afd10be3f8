"""Turn a resource into typed index entries (write time, pure; problems become warnings, not errors).

The registry's compiled extractors yield (value, FHIR type) nodes; this module converts each node into
rows of its parameter type. Conversions follow the node's type when known, its JSON shape otherwise
(fhirpathpy fallbacks and composite components give untyped nodes).
"""

from __future__ import annotations

import re
from typing import Any

from fhir_server.search.index import IndexEntries
from fhir_server.search.paths import Node
from fhir_server.search.registry import CompiledParam, SearchRegistry, param_id
from fhir_server.search.units import CANONICAL_SUFFIX, canonical
from fhir_server.search.values import MAX_US, MIN_US, date_range, normalize_string, parse_number

JsonObject = dict[str, Any]

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")
_ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country", "text")
_ADDRESS_ONLY = frozenset(_ADDRESS_PARTS) - {"text"}
INF = float("inf")
_CC_ONLY_TEXT = {"text", "id", "extension"}  # an untyped {"text": ...}: a CodeableConcept without codings


def extract(resource: JsonObject, registry: SearchRegistry) -> IndexEntries:
    """Index entries of every search parameter of the resource's type."""
    rtype = resource.get("resourceType", "")
    entries = IndexEntries(rtype)
    for cp in registry.compiled(rtype):
        if cp.keys is not None:
            for key in cp.keys:
                if key in resource:
                    break
            else:
                continue
        try:
            nodes = cp.extract(resource)
        except Exception as exc:  # noqa: BLE001 - a bad value must not fail the write
            entries.warnings.append(f"{cp.param.code}: {exc}")
            continue
        if nodes:
            add_nodes(entries, cp, nodes, rtype)
    return entries


def add_nodes(entries: IndexEntries, cp: CompiledParam, nodes: list[Node], rtype: str) -> None:
    """Convert the nodes one parameter extracted into rows of its type (also used by test oracles)."""
    pid = cp.pid
    kind = cp.param.type
    if kind == "token":
        for node in nodes:
            for system, code, text in token_values(node):
                entries.tokens.append((pid, system, code, text))
            if cp.param.code and (node[1] == "Identifier" or _is_identifier(node)):
                _identifier_of_type(entries, param_id(rtype, cp.param.code + ":of-type"), node[0])
    elif kind == "string":
        for node in nodes:
            for raw in string_values(node):
                entries.strings.append((pid, normalize_string(raw), raw))
    elif kind == "reference":
        id_pid = param_id(rtype, cp.param.code + ":identifier")
        for node in nodes:
            ref = reference_value(node[0])
            if ref is not None:
                entries.references.append((pid, *ref))
            value = node[0]
            if type(value) is dict and type(value.get("identifier")) is dict:
                for system, code, text in token_values((value["identifier"], "Identifier", None)):
                    entries.tokens.append((id_pid, system, code, text))
    elif kind == "date":
        for node in nodes:
            entries.dates.extend((pid, low, high) for low, high in date_values(node))
    elif kind == "number":
        for node in nodes:
            for low, high in number_values(node):
                entries.numbers.append((pid, low, high))
    elif kind == "quantity":
        canonical_pid = param_id(rtype, cp.param.code + CANONICAL_SUFFIX)
        for node in nodes:
            for system, code, low, high in quantity_values(node):
                entries.quantities.append((pid, system, code, low, high))
                scale = canonical(system, code)
                if scale is not None:
                    unit, factor = scale
                    entries.quantities.append((canonical_pid, system, unit, low * factor, high * factor))
    elif kind == "uri":
        for node in nodes:
            if isinstance(node[0], str):
                entries.uris.append((pid, node[0]))
    elif kind == "composite":
        _add_composite(entries, cp, nodes)


def _is_identifier(node: Node) -> bool:
    value = node[0]
    return node[1] is None and type(value) is dict and "value" in value and "type" in value


def _identifier_of_type(entries: IndexEntries, pid: int, identifier: Any) -> None:
    if type(identifier) is not dict or not isinstance(identifier.get("value"), str):
        return
    for coding in (identifier.get("type") or {}).get("coding", []):
        if isinstance(coding, dict):
            code = f"{coding.get('code', '')}|{identifier['value']}"
            entries.tokens.append((pid, coding.get("system", "") or "", code, ""))


def token_values(node: Node) -> list[tuple[str, str, str]]:
    """(system, code, normalised text) of a code, Coding, CodeableConcept, Identifier, ContactPoint..."""
    value, ftype, _ = node
    if isinstance(value, str):
        return [("", value, "")]
    if isinstance(value, bool):
        return [("", "true" if value else "false", "")]
    if type(value) is not dict:
        return []
    if ftype == "CodeableConcept" or "coding" in value or (ftype is None and value.keys() <= _CC_ONLY_TEXT):
        text = value.get("text")
        norm = normalize_string(text) if isinstance(text, str) else ""
        out = []
        for coding in value.get("coding", []):
            if type(coding) is dict and isinstance(coding.get("code"), str):
                display = coding.get("display")
                dnorm = normalize_string(display) if isinstance(display, str) else ""
                out.append((coding.get("system", "") or "", coding.get("code", "") or "", norm or dnorm))
        if not out and norm:
            out.append(("", "", norm))
        return out
    if ftype in ("Identifier", "ContactPoint") or "value" in value:
        v = value.get("value")
        if not isinstance(v, str):
            return []
        ttext = (value.get("type") or {}).get("text") if type(value.get("type")) is dict else None
        return [(value.get("system", "") or "", v, normalize_string(ttext) if isinstance(ttext, str) else "")]
    # a Coding; one without a code indexes nothing, like an Identifier without a value
    if isinstance(value.get("code"), str):
        display = value.get("display")
        return [
            (
                value.get("system", "") or "",
                value.get("code", "") or "",
                normalize_string(display) if isinstance(display, str) else "",
            )
        ]
    return []


def string_values(node: Node) -> list[str]:
    """The searchable strings of a string, HumanName or Address (plus 张三丰 from family 张 + given 三丰)."""
    value = node[0]
    if isinstance(value, str):
        return [value]
    if type(value) is not dict:
        return []
    is_address = node[1] == "Address" or (node[1] is None and not value.keys().isdisjoint(_ADDRESS_ONLY))
    parts = _ADDRESS_PARTS if is_address else _NAME_PARTS
    out: list[str] = []
    for key in parts:
        v = value.get(key)
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, list):
            out.extend(x for x in v if isinstance(x, str))
    family = value.get("family")
    given = value.get("given")
    if isinstance(family, str) and isinstance(given, list) and given and _CJK.search(family):
        out.append(family + "".join(g for g in given if isinstance(g, str)))
    return out


def reference_value(value: Any) -> tuple[str, str, str] | None:
    """(target type, target id, absolute url or canonical) of a Reference or canonical string."""
    if isinstance(value, str):
        return ("", "", value)
    if type(value) is not dict:
        return None
    ref = value.get("reference")
    if not isinstance(ref, str) or not ref or ref.startswith("#"):
        return None
    path = ref.split("/_history/")[0].rstrip("/")
    parts = path.split("/")
    if "://" in ref or ref.startswith("urn:"):
        if len(parts) >= 2 and "://" in ref and parts[-2][:1].isupper():
            return (parts[-2], parts[-1], ref)
        return ("", "", ref)
    if len(parts) == 2:
        return (parts[0], parts[1], "")
    return None


def date_values(node: Node) -> list[tuple[int, int]]:
    value, ftype, _ = node
    if isinstance(value, str):
        rng = date_range(value)
        return [] if rng is None else [rng]
    if type(value) is not dict:
        return []
    if ftype == "Period" or "start" in value or "end" in value:
        start = date_range(value["start"]) if isinstance(value.get("start"), str) else None
        end = date_range(value["end"]) if isinstance(value.get("end"), str) else None
        if start is None and end is None:
            return []
        if start is not None and end is not None and end[1] < start[1]:
            # an inverted Period (invalid, per-1) still indexes as a proper range: high > low always
            return [(min(start[0], end[0]), max(start[1], end[1]))]
        return [(start[0] if start else MIN_US, end[1] if end else MAX_US)]
    out: list[tuple[int, int]] = []
    for ev in value.get("event", []):
        if isinstance(ev, str):
            rng = date_range(ev)
            if rng:
                out.append(rng)
    bounds = (value.get("repeat") or {}).get("boundsPeriod")
    if type(bounds) is dict:
        out.extend(date_values((bounds, "Period", None)))
    return out


def number_values(node: Node) -> list[tuple[float, float]]:
    value = node[0]
    n = parse_number(value)
    if n is not None:
        return [(n, n)]
    if type(value) is dict:
        v = parse_number(value.get("value"))
        if v is not None:
            return [(v, v)]
    return []


def quantity_values(node: Node) -> list[tuple[str, str, float, float]]:
    """(system, code, low, high) of a Quantity (Age, Duration, Money...) or Range."""
    value = node[0]
    if type(value) is not dict:
        n = parse_number(value)
        return [] if n is None else [("", "", n, n)]
    if "low" in value or "high" in value:
        low: JsonObject = value["low"] if type(value.get("low")) is dict else {}
        high: JsonObject = value["high"] if type(value.get("high")) is dict else {}
        lv, hv = parse_number(low.get("value")), parse_number(high.get("value"))
        ref = low or high
        return [
            (
                ref.get("system", "") or "",
                ref.get("code") or ref.get("unit") or "",
                -INF if lv is None else lv,
                INF if hv is None else hv,
            )
        ]
    v = parse_number(value.get("value"))
    if v is None:
        return []
    code = value.get("code") or value.get("unit") or value.get("currency") or ""
    return [(value.get("system", "") or "", code, v, v)]


def _add_composite(entries: IndexEntries, cp: CompiledParam, nodes: list[Node]) -> None:
    (first, first_extract), (second, second_extract) = cp.components
    for node in nodes:
        # the second component first: for code-value-[x] pairs only one value type is ever present
        tails: list[tuple[str, float, float]] = []
        for n in second_extract(node):
            tails.extend(composite_tail(second.type, n))
        if not tails:
            continue
        heads = [tv for n in first_extract(node) for tv in token_values(n)]
        for system, code, _text in heads:
            for key, low, high in tails:
                entries.composites.append((cp.pid, system, code, key, low, high))


def composite_tail(kind: str, node: Node) -> list[tuple[str, float, float]]:
    """The second component of a composite as (key, low, high)."""
    if kind == "token":
        return [(f"{s}|{c}", 0.0, 0.0) for s, c, _ in token_values(node)]
    if kind == "quantity":
        return [(f"{s}|{c}", lo, hi) for s, c, lo, hi in quantity_values(node)]
    if kind == "date":
        return [("", float(lo), float(hi)) for lo, hi in date_values(node)]
    if kind == "number":
        return [("", lo, hi) for lo, hi in number_values(node)]
    if kind == "string":
        return [(normalize_string(s), 0.0, 0.0) for s in string_values(node)]
    if kind == "reference":
        ref = reference_value(node[0])
        return [] if ref is None else [(f"{ref[0]}/{ref[1]}" if ref[0] else ref[2], 0.0, 0.0)]
    if kind == "uri" and isinstance(node[0], str):
        return [(node[0], 0.0, 0.0)]
    return []
