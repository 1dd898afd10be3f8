"""Server-assigned ids are RFC 9562 version 7 UUIDs: valid FHIR ids, unique, and in time order."""

from __future__ import annotations

import re
import time
import uuid

from fhir_server.model.ids import new_resource_id

FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def test_version_7_ids_sort_by_creation_time_and_stay_random() -> None:
    first = [new_resource_id() for _ in range(2000)]
    time.sleep(0.002)
    later = [new_resource_id() for _ in range(2000)]
    for rid in first + later:
        parsed = uuid.UUID(rid)
        assert (parsed.version, parsed.variant) == (7, uuid.RFC_4122) and FHIR_ID.fullmatch(rid)
    assert len(set(first + later)) == 4000
    assert max(first) < min(later)  # a later millisecond sorts after: B-tree inserts append
    millis = int(first[0].replace("-", "")[:12], 16)
    assert abs(millis - time.time() * 1000) < 60_000
