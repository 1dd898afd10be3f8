"""The search plan: what a FHIR search asks for, independent of any backend (frozen dataclasses).

A `SearchQuery` is an AND of `Criterion`s; each criterion is an OR of values of one parameter, possibly
reached through a chain (`subject:Patient.name=x`) or a reverse chain (`_has:Observation:subject:code=x`).
Parameters are resolved to integer ids per resource type (`ParamRef.pids`), so backends never consult
the registry. Values are already parsed into ranges / normalised strings (see values.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ---- values (one per parameter type) ----


@dataclass(frozen=True)
class TokenValue:
    system: str | None  # None: any system; '': no system (`|code`)
    code: str | None  # None: `system|` (any code in the system)
    text: str = ""  # normalised, for :text


@dataclass(frozen=True)
class StringValue:
    value: str  # normalised (or raw for :exact)


@dataclass(frozen=True)
class ReferenceValue:
    type: str | None
    id: str | None
    url: str = ""  # absolute URL / canonical: matched as-is


@dataclass(frozen=True)
class RangeValue:
    """date / number / quantity: prefix + the [low, high) range implied by the value's precision."""

    prefix: str
    low: float
    high: float
    value: float = 0.0  # the number as written (number/quantity comparisons)
    system: str | None = None  # quantity
    code: str | None = None  # quantity


@dataclass(frozen=True)
class UriValue:
    value: str


@dataclass(frozen=True)
class CompositeValue:
    first: TokenValue
    second_key: str | None  # token/string/reference key; None when the second is a range
    second_range: RangeValue | None = None
    second_kind: str = "token"


@dataclass(frozen=True)
class MissingValue:
    missing: bool


Value = TokenValue | StringValue | ReferenceValue | RangeValue | UriValue | CompositeValue | MissingValue

# ---- criteria ----


@dataclass(frozen=True)
class ParamRef:
    code: str
    type: str  # token | string | reference | date | number | quantity | uri | composite | special
    pids: tuple[int, ...]  # one per resource type searched; special params (_id, _lastUpdated) have none


@dataclass(frozen=True)
class Criterion:
    """One parameter test: `param[:modifier]` matches any of `values` (OR)."""

    param: ParamRef
    modifier: str | None
    values: tuple[Value, ...]


@dataclass(frozen=True)
class Chain:
    """`ref:Type.inner`: `ref` points at a resource of one of `target_types` that matches `inner`."""

    ref: ParamRef
    target_types: tuple[str, ...]
    inner: Filter


@dataclass(frozen=True)
class Has:
    """`_has:Type:ref:inner`: some `source_type` resource whose `ref` points here matches `inner`."""

    source_type: str
    ref: ParamRef
    inner: Filter


Filter = Criterion | Chain | Has


@dataclass(frozen=True)
class SortKey:
    param: ParamRef
    descending: bool = False


@dataclass(frozen=True)
class Include:
    source_type: str | None  # None for `*` source
    param: str  # code, or '*'
    target_type: str | None = None
    iterate: bool = False
    reverse: bool = False


@dataclass(frozen=True)
class SearchQuery:
    resource_type: str | None
    types: tuple[str, ...] = ()  # the resource types searched (one, or `_type` for system search)
    filters: tuple[Filter, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int = 20
    cursor: str | None = None
    total: str = "none"  # none | estimate | accurate
    summary: str | None = None  # true | text | data | count | false
    elements: tuple[str, ...] = ()
    includes: tuple[Include, ...] = ()
    applied: tuple[tuple[str, str], ...] = ()  # the parameters applied, for the self link
    ignored: tuple[str, ...] = field(default=())  # unknown params dropped (lenient)

    @property
    def wants_total(self) -> bool:
        """Whether the backend must count the matches (asked for, or a count-only search)."""
        return self.total in ("accurate", "estimate") or self.summary == "count" or self.count == 0
