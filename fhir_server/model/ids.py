"""Server-assigned resource ids: UUIDs in time order (RFC 9562 version 7), not random (version 4).

Why: every id is a key in several SQLite B-trees (the resource and version tables' (type, id) keys,
and every reference index row that points at the resource). Random ids land each insert on a random
leaf page: one HL7 message caused ~246 KB of writes (WAL and checkpoint), ~176 KB with ids that grow
with time, whose inserts append to the same few pages. A version 7 id still has 74 random bits, so
ids stay unguessable; the time it reveals is already in meta.lastUpdated.
"""

from __future__ import annotations

import os
import time
import uuid

_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0x2 << 62
_CLEAR = ~((0xF << 76) | (0x3 << 62))


def new_resource_id() -> str:
    """A version 7 UUID: 48-bit Unix milliseconds, then 74 random bits (version and variant set)."""
    millis = time.time_ns() // 1_000_000
    value = (millis << 80) | int.from_bytes(os.urandom(10), "big")
    return str(uuid.UUID(int=(value & _CLEAR) | _VERSION_7 | _VARIANT_RFC))
