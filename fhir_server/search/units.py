"""UCUM canonical units for quantity search: values in units that differ only by a scale factor are
indexed a second time in one canonical unit, so `5|http://unitsofmeasure.org|g` finds `5000 mg`.

Only pure scalings are listed (no offsets such as Cel/[degF], no molar masses): where a conversion is
not a multiplication it is not done, and the quantity is matched in the unit it was written in.
"""

from __future__ import annotations

UCUM = "http://unitsofmeasure.org"
CANONICAL_SUFFIX = ":canonical"  # the index rows in canonical units live under `code:canonical`

# code -> (canonical code, factor to the canonical unit)
_SCALES: dict[str, tuple[str, float]] = {}


def _family(canonical: str, units: dict[str, float]) -> None:
    for code, factor in units.items():
        _SCALES[code] = (canonical, factor)


_family(
    "g",
    {"kg": 1e3, "g": 1.0, "mg": 1e-3, "ug": 1e-6, "ng": 1e-9, "[lb_av]": 453.59237, "[oz_av]": 28.349523125},
)
_family("m", {"km": 1e3, "m": 1.0, "cm": 1e-2, "mm": 1e-3, "um": 1e-6, "[in_i]": 0.0254, "[ft_i]": 0.3048})
_family("L", {"L": 1.0, "l": 1.0, "dL": 0.1, "dl": 0.1, "mL": 1e-3, "ml": 1e-3, "uL": 1e-6})
_family("s", {"s": 1.0, "ms": 1e-3, "min": 60.0, "h": 3600.0, "d": 86400.0, "wk": 604800.0})
_family(
    "g/L", {"g/L": 1.0, "g/dL": 10.0, "mg/dL": 1e-2, "mg/L": 1e-3, "ug/L": 1e-6, "ng/mL": 1e-6, "ug/mL": 1e-3}
)
_family("mol/L", {"mol/L": 1.0, "mmol/L": 1e-3, "umol/L": 1e-6, "nmol/L": 1e-9, "pmol/L": 1e-12})
_family("Pa", {"Pa": 1.0, "kPa": 1e3, "mm[Hg]": 133.322387415})
_family("/min", {"/min": 1.0, "/s": 60.0, "/h": 1 / 60})


def canonical(system: str | None, code: str | None) -> tuple[str, float] | None:
    """(canonical UCUM code, factor) for a UCUM quantity unit that is a pure scaling, else None."""
    if system != UCUM or code is None:
        return None
    return _SCALES.get(code)
