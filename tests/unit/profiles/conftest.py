"""One validator per test session: building it compiles every core StructureDefinition (about a second)."""

from __future__ import annotations

import pytest

from profiles.validator import Validator, build_validator


@pytest.fixture(scope="session")
def validator() -> Validator:
    return build_validator()
