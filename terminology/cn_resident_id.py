"""居民身份证号码 (Chinese resident identity card number, GB 11643-1999): structure and check digit.

Why here and not in the HL7 adapter: any edge that receives a resident ID (HL7 PID-3/PID-19, a FHIR
Patient.identifier, a DICOM Other Patient ID) must reject the same wrong numbers, and a mistyped number
is worse than none: it links two people's records across the consortium.

Layout of the 18 characters: 6-digit administrative division code, 8-digit birth date YYYYMMDD,
3-digit sequence (odd = male), 1 check character. Check: sum(digit_i * W_i) mod 11 indexes "10X98765432",
with W_i = 2^(17-i) mod 11 = 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

SYSTEM = "urn:oid:2.16.156.10011.1.3"
"""Identifier.system of a resident ID in this hub: the OID used for the resident identity card in
Chinese health-information standards (WS 363/364 data elements). Every edge names it from here."""

WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"


def check_character(first17: str) -> str:
    """The check character for the first 17 digits."""
    if len(first17) != 17 or not first17.isdigit():
        raise ValueError("a resident ID body is 17 digits")
    total = sum(int(d) * w for d, w in zip(first17, WEIGHTS, strict=True))
    return CHECK_CHARS[total % 11]


def problem(number: str) -> str | None:
    """Why `number` is not a valid 18-character resident ID, or None when it is valid."""
    value = number.strip().upper()
    if len(value) != 18:
        return f"resident ID must have 18 characters, got {len(value)}"
    body, check = value[:17], value[17]
    if not body.isdigit():
        return "resident ID characters 1-17 must be digits"
    try:
        born = dt.date(int(body[6:10]), int(body[10:12]), int(body[12:14]))
    except ValueError:
        return f"resident ID birth date '{body[6:14]}' is not a calendar date"
    if born.year < 1880:
        return f"resident ID birth date '{body[6:14]}' is implausible"
    expected = check_character(body)
    if check != expected:
        return f"resident ID check character is '{check}', expected '{expected}'"
    return None


@lru_cache(maxsize=65536)
def is_valid(number: str) -> bool:
    """Cached: a write section asks about each Patient's number several times (placement, its index)."""
    return problem(number) is None


def normalise(number: str) -> str:
    """Canonical form: stripped, upper-case X."""
    return number.strip().upper()


def make(division: str, birth: dt.date, sequence: int) -> str:
    """Build a valid number (test data generation; never for real people)."""
    body = f"{division:0>6}{birth:%Y%m%d}{sequence:03d}"
    return body + check_character(body)
