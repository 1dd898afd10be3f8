"""Typed index entries extracted from a resource at write time: one list per parameter type.

Each row starts with the parameter's integer id (`SearchParam.pid`, scoped to resource type + code), so a
backend can lay the rows out as-is (SQLite: one table per list; memory: kept beside the resource).
Missing systems/codes are '' rather than None so equality works the same in SQL and in Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# (pid, normalised, raw)
StringRow = tuple[int, str, str]
# (pid, system, code, normalised display/text)
TokenRow = tuple[int, str, str, str]
# (pid, target type, target id, absolute url or canonical ('' when relative))
ReferenceRow = tuple[int, str, str, str]
# (pid, low, high)  dates in epoch microseconds; numbers as floats
DateRow = tuple[int, int, int]
NumberRow = tuple[int, float, float]
# (pid, system, code, low, high)
QuantityRow = tuple[int, str, str, float, float]
# (pid, uri)
UriRow = tuple[int, str]
# (pid, first component system, first component code, second component key, low, high)
# the second component is a token/string/reference/uri key ("system|code") or a numeric/date range
CompositeRow = tuple[int, str, str, str, float, float]


@dataclass(frozen=True, slots=True)
class IndexEntries:
    resource_type: str
    strings: list[StringRow] = field(default_factory=list)
    tokens: list[TokenRow] = field(default_factory=list)
    references: list[ReferenceRow] = field(default_factory=list)
    dates: list[DateRow] = field(default_factory=list)
    numbers: list[NumberRow] = field(default_factory=list)
    quantities: list[QuantityRow] = field(default_factory=list)
    uris: list[UriRow] = field(default_factory=list)
    composites: list[CompositeRow] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def pids(self) -> set[int]:
        """Every parameter id that has at least one entry (for :missing)."""
        out: set[int] = set()
        for rows in (
            self.strings,
            self.tokens,
            self.references,
            self.dates,
            self.numbers,
            self.quantities,
            self.uris,
            self.composites,
        ):
            out.update(row[0] for row in rows)
        return out
