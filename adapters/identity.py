"""How the adapters name members, patients and studies, so HL7 v2 and DICOM agree on one Patient.

A member's HIS (PID-3 with assigning authority) and its PACS (Patient ID + Issuer of Patient ID) must
produce the same identifier system for the same local patient number, or a referred patient splits in two.
"""

from __future__ import annotations

import re

from terminology import cn_resident_id

# Identifier.system values fixed by standards.
DICOM_UID_SYSTEM = "urn:dicom:uid"
# 居民身份证号码 (GB 11643): one system for every edge, defined beside its check digit.
CN_RESIDENT_ID_SYSTEM = cn_resident_id.SYSTEM

RESIDENT_ID_ISSUERS = frozenset({"CHN", "身份证", "居民身份证", "2.16.156.10011.1.3", "GB11643"})
"""Assigning authorities (HL7 CX.4) and DICOM Issuers of Patient ID that mean "this is a 居民身份证"."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._\-]")


def member_slug(authority: str) -> str:
    """A stable, URL-safe token for a member's namespace (assigning authority / issuer / AE title)."""
    cleaned = _UNSAFE.sub("-", authority.strip())
    return cleaned or "unknown"


def patient_identifier_system(authority: str) -> str:
    """Identifier.system for a member-local patient number (MRN / PACS Patient ID).

    `authority` is PID-3.4 (HL7) or Issuer of Patient ID (0010,0021) / the member's configured name (DICOM).
    An OID authority is used as `urn:oid:`; anything else is namespaced under the consortium.
    """
    value = authority.strip()
    if re.fullmatch(r"[0-2](\.(0|[1-9][0-9]*))+", value):
        return f"urn:oid:{value}"
    return f"urn:yilian:member:{member_slug(value)}:patient-id"


def organization_identifier_system() -> str:
    """Identifier.system for consortium member organizations (sending facility / AE-title mapping)."""
    return "urn:yilian:member"


def uid_value(uid: str) -> str:
    """A DICOM UID as an `urn:dicom:uid` identifier value."""
    return f"urn:oid:{uid}"
