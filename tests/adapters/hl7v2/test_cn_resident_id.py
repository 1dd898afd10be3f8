"""GB 11643 resident ID check character."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from terminology import cn_resident_id


def test_known_check_characters() -> None:
    # Published GB 11643 worked example: 11010519491231002X.
    assert cn_resident_id.is_valid("11010519491231002X")
    assert cn_resident_id.is_valid("11010519491231002x")
    assert cn_resident_id.problem("110105194912310021") == "resident ID check character is '1', expected 'X'"


@pytest.mark.parametrize(
    ("number", "why"),
    [
        ("1101051949123100", "18 characters"),
        ("11010519491331002X", "calendar date"),
        ("1101051949123A002X", "digits"),
    ],
)
def test_malformed(number: str, why: str) -> None:
    assert why in (cn_resident_id.problem(number) or "")


@given(
    st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2030, 12, 31)),
    st.integers(0, 999),
    st.integers(0, 16),
)
def test_every_made_number_is_valid_and_any_single_digit_change_is_caught(
    birth: dt.date, seq: int, pos: int
) -> None:
    number = cn_resident_id.make("330183", birth, seq)
    assert cn_resident_id.is_valid(number)
    digit = int(number[pos])
    changed = number[:pos] + str((digit + 1) % 10) + number[pos + 1 :]
    assert not cn_resident_id.is_valid(changed)
