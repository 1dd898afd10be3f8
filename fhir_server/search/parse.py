"""Parse FHIR search parameters into a `SearchQuery` plan (pure; the registry is passed in).

Unknown parameters and malformed values raise `InvalidSearch` under strict handling; under lenient
handling they are dropped and listed in `SearchQuery.ignored`, and left out of `applied` (the self link).
"""

from __future__ import annotations

import re

from fhir_server.errors import InvalidSearch
from fhir_server.model.definitions import resource_types
from fhir_server.search.ast import (
    Chain,
    CompositeValue,
    Criterion,
    Filter,
    Has,
    Include,
    MissingValue,
    ParamRef,
    RangeValue,
    ReferenceValue,
    SearchQuery,
    SortKey,
    StringValue,
    TokenValue,
    UriValue,
    Value,
)
from fhir_server.search.registry import SearchParam, SearchRegistry, param_id
from fhir_server.search.units import CANONICAL_SUFFIX, canonical
from fhir_server.search.values import date_range, normalize_string, number_range

DEFAULT_COUNT = 20
MAX_COUNT = 1000
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_PREFIX_RE = re.compile(r"^(eq|ne|gt|lt|ge|le|sa|eb|ap)(?=[-+0-9.])")
IGNORED_CONTROL = frozenset({"_format", "_pretty", "_contained", "_containedType"})
MODIFIERS = {
    "token": {"not", "text", "of-type", "missing"},
    "string": {"exact", "contains", "missing"},
    "reference": {"identifier", "missing"},
    "date": {"missing"},
    "number": {"missing"},
    "quantity": {"missing"},
    "uri": {"below", "above", "missing"},
    "composite": {"missing"},
}


class _Skip(Exception):
    """A parameter to drop (lenient) or report (strict)."""


def split_escaped(text: str, sep: str) -> list[str]:
    """Split on `sep` not preceded by a backslash, then unescape `\\,` `\\|` `\\$` `\\\\`."""
    if "\\" not in text:  # the usual case; the character scan below cost ~1.5% of HL7 ingest
        return text.split(sep)
    parts: list[str] = []
    cur: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            cur.append(text[i : i + 2])
            i += 2
            continue
        if ch == sep:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


_ESCAPED = re.compile(r"\\([,|$\\])")


def unescape(text: str) -> str:
    if "\\" not in text:  # the usual case: no regex substitution
        return text
    return _ESCAPED.sub(r"\1", text)


def _types_for(resource_type: str | None, params: list[tuple[str, str]]) -> tuple[str, ...]:
    if resource_type is not None:
        return (resource_type,)
    listed = [t for k, v in params if k == "_type" for t in v.split(",") if t]
    known = resource_types()
    for t in listed:
        if t not in known:
            raise InvalidSearch(f"Unknown resource type '{t}' in _type")
    return tuple(dict.fromkeys(listed)) or tuple(sorted(known))


def param_ref(registry: SearchRegistry, types: tuple[str, ...], code: str) -> tuple[ParamRef, SearchParam]:
    """Resolve `code` on each of `types`; unknown on all of them raises _Skip."""
    found: list[tuple[str, SearchParam]] = [(t, p) for t in types if (p := registry.get(t, code)) is not None]
    if not found:
        raise _Skip(f"Unknown search parameter '{code}' for {', '.join(types[:5])}")
    first = found[0][1]
    kind = "special" if code in ("_id", "_lastUpdated") else first.type
    pids = () if kind == "special" else tuple(param_id(t, code) for t, _ in found)
    return ParamRef(code, kind if code != "_lastUpdated" else "date", pids), first


def parse_search(
    resource_type: str | None,
    params: list[tuple[str, str]],
    registry: SearchRegistry,
    *,
    strict: bool,
) -> SearchQuery:
    types = _types_for(resource_type, params)
    filters: list[Filter] = []
    sort: tuple[SortKey, ...] = ()
    includes: list[Include] = []
    applied: list[tuple[str, str]] = []
    ignored: list[str] = []
    count, total, summary, cursor = DEFAULT_COUNT, "none", None, None
    elements: tuple[str, ...] = ()
    for key, value in params:
        try:
            if key in IGNORED_CONTROL:
                continue
            if key == "_type" and resource_type is None:
                applied.append((key, value))
            elif key == "_count":
                if not value.isdigit():
                    raise _Skip(f"_count must be a non-negative integer, got '{value}'")
                count = min(int(value), MAX_COUNT)
                applied.append((key, value))
            elif key == "_cursor":
                cursor = value
            elif key == "_total":
                if value not in ("none", "estimate", "accurate"):
                    raise _Skip(f"_total must be none, estimate or accurate, got '{value}'")
                total = value
                applied.append((key, value))
            elif key == "_summary":
                if value not in ("true", "false", "text", "data", "count"):
                    raise _Skip(f"_summary must be true, false, text, data or count, got '{value}'")
                summary = value
                applied.append((key, value))
            elif key == "_elements":
                elements = tuple(e.strip() for e in value.split(",") if e.strip())
                applied.append((key, value))
            elif key == "_sort":
                sort = _parse_sort(registry, types, value)
                applied.append((key, value))
            elif key.split(":")[0] in ("_include", "_revinclude"):
                includes.append(_parse_include(registry, key, value))
                applied.append((key, value))
            else:
                filters.append(parse_filter(registry, types, key, value))
                applied.append((key, value))
        except _Skip as exc:
            if strict:
                raise InvalidSearch(str(exc)) from None
            ignored.append(key)
        except InvalidSearch:
            if strict:
                raise
            ignored.append(key)
    return SearchQuery(
        resource_type=resource_type,
        types=types,
        filters=tuple(filters),
        sort=sort,
        count=count,
        cursor=cursor,
        total=total,
        summary=summary,
        elements=elements,
        includes=tuple(includes),
        applied=tuple(applied),
        ignored=tuple(ignored),
    )


def parse_filter(registry: SearchRegistry, types: tuple[str, ...], key: str, value: str) -> Filter:
    """One `key=value` pair as a criterion, chain or reverse chain on `types`."""
    if key.startswith("_has:"):
        parts = key.split(":", 3)
        if len(parts) < 4:
            raise _Skip(f"_has needs _has:Type:reference:parameter, got '{key}'")
        _, source, ref_code, rest = parts
        if source not in resource_types():
            raise _Skip(f"Unknown resource type '{source}' in {key}")
        ref, ref_param = param_ref(registry, (source,), ref_code)
        if ref.type != "reference":
            raise _Skip(f"'{ref_code}' is not a reference parameter of {source}")
        return Has(source, ref, parse_filter(registry, (source,), rest, value))
    head, dot, rest = key.partition(".")
    name, _, modifier = head.partition(":")
    if dot:
        ref, ref_param = param_ref(registry, types, name)
        if ref.type != "reference":
            raise _Skip(f"Chained parameter '{name}' is not a reference")
        if modifier:
            targets: tuple[str, ...] = (modifier,)
        else:
            targets = tuple(t for t in ref_param.target if t in resource_types()) or tuple(
                sorted(resource_types())
            )
        inner_key = rest.split(".", 1)[0].split(":", 1)[0]
        targets = tuple(t for t in targets if registry.get(t, inner_key) is not None or inner_key == "_has")
        if not targets:
            raise _Skip(f"No target of '{name}' has a parameter '{inner_key}'")
        return Chain(ref, targets, parse_filter(registry, targets, rest, value))
    ref, param = param_ref(registry, types, name)
    if name not in ("_id", "_lastUpdated") and (not param.expression or param.type == "special"):
        raise _Skip(f"Search parameter '{name}' is not supported by this server")
    kind = param.type if ref.type != "special" else ("token" if name == "_id" else "date")
    mod = modifier or None
    if mod is not None:
        allowed = MODIFIERS.get(kind, set())
        if kind == "reference" and mod in resource_types():
            pass
        elif mod not in allowed:
            raise _Skip(f"Unsupported modifier ':{mod}' on {kind} parameter '{name}'")
    if mod == "missing":
        if value not in ("true", "false"):
            raise _Skip(f":missing takes true or false, got '{value}'")
        return Criterion(ref, mod, (MissingValue(value == "true"),))
    if mod in ("of-type", "identifier"):
        suffix = ":of-type" if mod == "of-type" else ":identifier"
        ref = ParamRef(name + suffix, "token", tuple(param_id(t, name + suffix) for t in types))
    raw_values = split_escaped(value, ",")
    values: list[Value] = []
    for raw in raw_values:
        if raw == "":
            continue
        values.append(_parse_value(registry, kind, mod, raw, name, param))
    if not values:
        raise _Skip(f"Empty value for '{key}'")
    if kind == "quantity" and mod is None:
        canonical_values = _canonical_quantities(values)
        if canonical_values is not None:
            pids = tuple(param_id(t, name + CANONICAL_SUFFIX) for t in types if registry.get(t, name))
            return Criterion(ParamRef(name + CANONICAL_SUFFIX, "quantity", pids), None, canonical_values)
    if mod is not None and mod in resource_types():
        return Criterion(ref, None, tuple(_typed_ref(v, mod) for v in values))
    return Criterion(ref, mod, tuple(values))


def _canonical_quantities(values: list[Value]) -> tuple[Value, ...] | None:
    """The values in canonical UCUM units when every one of them is a pure scaling, else None."""
    out: list[Value] = []
    for v in values:
        if not isinstance(v, RangeValue):
            return None
        scale = canonical(v.system, v.code)
        if scale is None:
            return None
        unit, f = scale
        out.append(RangeValue(v.prefix, v.low * f, v.high * f, v.value * f, v.system, unit))
    return tuple(out)


def _typed_ref(value: Value, rtype: str) -> Value:
    if isinstance(value, ReferenceValue) and value.type is None and not value.url:
        return ReferenceValue(rtype, value.id)
    return value


def _parse_value(
    registry: SearchRegistry, kind: str, mod: str | None, raw: str, name: str, param: SearchParam
) -> Value:
    if kind == "token":
        if mod == "text":
            return TokenValue(None, None, normalize_string(unescape(raw)))
        if mod == "of-type":
            parts = split_escaped(raw, "|")
            if len(parts) != 3:
                raise _Skip(f":of-type takes system|code|value, got '{raw}'")
            return TokenValue(unescape(parts[0]), f"{unescape(parts[1])}|{unescape(parts[2])}")
        return parse_token(raw)
    if kind == "string":
        text = unescape(raw)
        return StringValue(text if mod == "exact" else normalize_string(text))
    if kind == "reference":
        if mod == "identifier":
            return parse_token(raw)
        return parse_reference(unescape(raw))
    if kind in ("date", "number", "quantity"):
        return parse_range(kind, raw, name)
    if kind == "uri":
        return UriValue(unescape(raw))
    if kind == "composite":
        parts = split_escaped(raw, "$")
        if len(parts) != 2:
            raise _Skip(f"Composite '{name}' takes two values joined by $, got '{raw}'")
        first = parse_token(parts[0])
        return _composite_second(registry, param, first, parts[1], name)
    raise _Skip(f"Parameter '{name}' of type {kind} is not searchable here")


def _composite_second(
    registry: SearchRegistry, param: SearchParam, first: TokenValue, raw: str, name: str
) -> CompositeValue:
    second = registry.by_url.get(param.components[1].definition) if len(param.components) > 1 else None
    second_kind = second.type if second is not None else "token"
    if second_kind in ("quantity", "date", "number"):
        return CompositeValue(first, None, parse_range(second_kind, raw, name), second_kind)
    if second_kind == "token":
        tok = parse_token(raw)
        key = f"{tok.system}|{tok.code}" if tok.system is not None else f"|{tok.code}"
        return CompositeValue(first, key, None, "token-any" if tok.system is None else "token")
    if second_kind == "string":
        return CompositeValue(first, normalize_string(unescape(raw)), None, "string")
    return CompositeValue(first, unescape(raw), None, second_kind)


def parse_token(raw: str) -> TokenValue:
    parts = split_escaped(raw, "|")
    if len(parts) == 1:
        return TokenValue(None, unescape(parts[0]))
    system, code = unescape(parts[0]), unescape("|".join(parts[1:]))
    return TokenValue(system, code or None)


def parse_reference(raw: str) -> ReferenceValue:
    if "://" in raw or raw.startswith("urn:"):
        path = raw.split("|")[0].split("/_history/")[0]
        parts = path.rstrip("/").split("/")
        if "://" in raw and len(parts) >= 2 and parts[-2][:1].isupper():
            return ReferenceValue(parts[-2], parts[-1], raw)
        return ReferenceValue(None, None, raw.split("|")[0])
    parts = raw.split("/_history/")[0].split("/")
    if len(parts) == 2:
        return ReferenceValue(parts[0], parts[1])
    if len(parts) == 1:
        return ReferenceValue(None, parts[0])
    raise _Skip(f"Malformed reference '{raw}'")


def parse_range(kind: str, raw: str, name: str) -> RangeValue:
    prefix = "eq"
    m = _PREFIX_RE.match(raw)
    if m:
        prefix, raw = m.group(1), raw[2:]
    if kind == "date":
        rng = date_range(raw)
        if rng is None:
            raise _Skip(f"Malformed date '{raw}' for '{name}'")
        return RangeValue(prefix, float(rng[0]), float(rng[1]), float(rng[0]))
    number_text, system, code = raw, None, None
    if kind == "quantity":
        parts = split_escaped(raw, "|")
        number_text = parts[0]
        if len(parts) == 3:
            system, code = unescape(parts[1]) or None, unescape(parts[2]) or None
        elif len(parts) != 1:
            raise _Skip(f"Quantity takes number|system|code, got '{raw}'")
    num = number_range(number_text)
    if num is None:
        raise _Skip(f"Malformed number '{number_text}' for '{name}'")
    value, low, high = num
    return RangeValue(prefix, low, high, value, system, code)


def _parse_sort(registry: SearchRegistry, types: tuple[str, ...], value: str) -> tuple[SortKey, ...]:
    keys: list[SortKey] = []
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        desc = item.startswith("-")
        code = item.lstrip("-")
        ref, param = param_ref(registry, types, code)
        if ref.type not in ("special", "string", "token", "date", "number", "quantity", "uri", "reference"):
            raise _Skip(f"Cannot sort by {param.type} parameter '{code}'")
        keys.append(SortKey(ref, desc))
    return tuple(keys)


def _parse_include(registry: SearchRegistry, key: str, value: str) -> Include:
    kind, _, mod = key.partition(":")
    if mod not in ("", "iterate", "recurse"):
        raise _Skip(f"Unsupported modifier '{mod}' on {kind}")
    reverse = kind == "_revinclude"
    if value == "*":
        return Include(None, "*", None, bool(mod), reverse)
    parts = value.split(":")
    if len(parts) not in (2, 3) or parts[0] not in resource_types():
        raise _Skip(f"{kind} takes Type:parameter[:targetType], got '{value}'")
    source, code = parts[0], parts[1]
    if code != "*":
        param = registry.get(source, code)
        if param is None or param.type != "reference":
            raise _Skip(f"'{code}' is not a reference parameter of {source}")
    target = parts[2] if len(parts) == 3 else None
    return Include(source, code, target, bool(mod), reverse)
