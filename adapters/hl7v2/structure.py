"""hl7apy's structure knowledge where it pays: explaining why a rejected message is wrong.

Too slow for every message (hl7apy parses ~86 ADT/s here), cheap enough for the few that fail: when a
message is answered AE/AR, its text is parsed and validated against the v2 message structure of its
version, and the first findings are added to the ACK as warning ERR segments (missing required
segments, unexpected segments), so the sender's integrator sees more than our own map's complaint.
"""

from __future__ import annotations

import logging

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message
from hl7apy.validation import Validator

from adapters.hl7v2.ack import ErrorDetail

log = logging.getLogger(__name__)
SUPPORTED = {"2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7"}


def diagnose(text: str, version: str, limit: int = 3) -> list[ErrorDetail]:
    """Structure findings for a message text (never raises: a diagnosis is advice, not a verdict)."""
    if version not in SUPPORTED:
        return []
    findings: list[ErrorDetail] = []
    try:
        msg = parse_message(
            text.replace("\n", "\r"), validation_level=VALIDATION_LEVEL.TOLERANT, find_groups=True
        )
        Validator.validate(msg)
    except HL7apyException as exc:
        findings.append(ErrorDetail("100", f"v{version} structure: {exc}", "", "W"))
    except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
        log.debug("hl7apy could not diagnose the message: %s", type(exc).__name__)
    return findings[:limit]
