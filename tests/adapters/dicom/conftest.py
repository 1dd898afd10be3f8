"""Shared fixtures for the DICOM adapter tests: a recording Sink, dcmtk detection, generated studies."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

JsonObject = dict[str, Any]


def _dcmtk_tool(name: str) -> str | None:
    """The dcmtk binary called `name` on PATH, skipping same-named scripts (pynetdicom installs a
    `storescu` etc. into the venv's bin)."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(folder) / name
        if not (candidate.is_file() and os.access(candidate, os.X_OK)):
            continue
        try:
            probe = subprocess.run([str(candidate), "--version"], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            continue
        if "dcmtk" in (probe.stdout + probe.stderr).lower():
            return str(candidate)
    return None


DCMTK_TOOLS = {t: _dcmtk_tool(t) for t in ("echoscu", "storescu", "findscu", "movescu", "getscu", "storescp")}
DCMTK = all(DCMTK_TOOLS.values())
needs_dcmtk = pytest.mark.skipif(not DCMTK, reason="dcmtk tools not on PATH")


class RecordingSink:
    """A Sink that records submitted Bundles and answers searches from a fixed list of resources."""

    def __init__(self, resources: list[JsonObject] | None = None) -> None:
        self.bundles: list[JsonObject] = []
        self.resources = resources or []
        self.audited: list[Any] = []

    async def submit(self, bundle: JsonObject, *, durable: bool = True) -> JsonObject:
        self.bundles.append(bundle)
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": []}

    async def sync(self) -> None:
        pass

    async def search(
        self, resource_type: str, params: list[tuple[str, str]], *, member: str | None = None
    ) -> JsonObject:
        hits = [r for r in self.resources if r.get("resourceType") == resource_type]
        return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in hits]}

    async def read(self, resource_type: str, resource_id: str) -> JsonObject | None:
        for r in self.resources:
            if r.get("resourceType") == resource_type and r.get("id") == resource_id:
                return r
        return None

    def audit(self, record: Any) -> None:
        self.audited.append(record)


@pytest.fixture
def recording_sink() -> RecordingSink:
    return RecordingSink()


async def wait_for(predicate, timeout: float = 8.0, interval: float = 0.05):
    """Poll `predicate` (sync or async) until truthy; the value, or AssertionError after `timeout`."""
    import asyncio
    import inspect
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)


def study_bundles(sink: RecordingSink, study_uid: str) -> list[JsonObject]:
    out = []
    for b in sink.bundles:
        for e in b["entry"]:
            if e["resource"]["resourceType"] == "ImagingStudy" and study_uid in e["request"]["url"]:
                out.append(e["resource"])
    return out
