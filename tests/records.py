"""Reading the hub's record back over HTTP, shared by the tests of every edge (REST, HL7, DICOM)."""

from __future__ import annotations

from typing import Any

import httpx

from fhir_server.model.person import MASTER_TAG_CODE, MASTER_TAG_SYSTEM


async def search(client: httpx.AsyncClient, rtype: str, **params: str) -> list[dict[str, Any]]:
    """The resources of the first page of a search (which must answer 200)."""
    r = await client.get(f"/fhir/{rtype}", params=params)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


async def masters(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Every master Patient the hub keeps."""
    return await search(client, "Patient", _tag=f"{MASTER_TAG_SYSTEM}|{MASTER_TAG_CODE}")
