"""Value conversions shared by extraction (write time) and parsing (query time).

Both sides must agree exactly, so the conversions live in one place: strings are normalised the same
way, dates and numbers become the same half-open [low, high) ranges. Dates are microseconds since the
Unix epoch (UTC; values without a zone are read as UTC), so SQLite compares plain integers.
"""

from __future__ import annotations

import unicodedata
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from fhir_server.search.dates import date_range

__all__ = ["MAX_US", "MIN_US", "date_range", "instant_us", "normalize_string", "number_range", "parse_number"]

MIN_US = -(2**62)
MAX_US = 2**62


def normalize_string(text: str) -> str:
    """Case fold and strip accents; NFKC first so full-width forms (ＡＢＣ, １２３) match what users type."""
    if text.isascii():
        return text.lower()
    return _fold_unicode(text)


@lru_cache(maxsize=16384)
def _fold_unicode(text: str) -> str:
    """Cached: Chinese text repeats across writes (cities, provinces, code displays) and two Unicode
    normalisations of it cost more than the rest of indexing one value."""
    folded = unicodedata.normalize("NFKD", unicodedata.normalize("NFKC", text).casefold())
    return "".join(ch for ch in folded if not unicodedata.combining(ch))


def instant_us(value: str) -> int | None:
    """Microseconds of an instant (meta.lastUpdated): the low end of its range."""
    rng = date_range(value)
    return None if rng is None else rng[0]


def number_range(text: str) -> tuple[float, float, float] | None:
    """(value, low, high) of a decimal search value: the range its significant figures imply."""
    try:
        dec = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not dec.is_finite():
        return None
    exponent = dec.as_tuple().exponent
    assert isinstance(exponent, int)
    half = Decimal(5) * Decimal(10) ** (exponent - 1)
    return float(dec), float(dec - half), float(dec + half)


def parse_number(value: object) -> float | None:
    """A JSON number (bool excluded) as float."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    return float(value)
