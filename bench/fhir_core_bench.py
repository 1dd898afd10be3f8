"""FHIR core throughput over real HTTP against one `yilian serve` process on SQLite.

Prints: single-resource create/s and read/s (wrk, 8 connections, keep-alive; reads as an admin client and
as a member client, whose reads check its care relationships, with the ratio) and transaction ingest of
Synthea-sized bundles in resources/s. Targets (issue 2): create ≥ 1,000/s, read ≥ 3,000/s,
transaction ≥ 3,000 resources/s. Needs `wrk` (apt-get install wrk); falls back to a Python client.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parent.parent
DURATION = int(os.environ.get("BENCH_SECONDS", "8"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


ADMIN = {"Authorization": "Bearer bench-admin"}
MEMBER = {"Authorization": "Bearer bench-member"}
TOKENS = {
    "bench-admin": "bench-ops",
    "bench-member": {"client": "bench-his", "member": "BENCH", "role": "member"},
}


def start_server(db: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "YILIAN_MLLP_PORT": "0",
        "YILIAN_DICOM_PORT": "0",
        "YILIAN_API_TOKENS": json.dumps(TOKENS),
    }
    cmd = [
        sys.executable,
        "-m",
        "fhir_server",
        "serve",
        "--port",
        str(port),
        "--db",
        str(db),
        "--log-level",
        "WARNING",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env)
    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/fhir/metadata", timeout=1).status_code == 200:  # public
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


def header_script(path: Path, headers: dict[str, str]) -> Path:
    path.write_text("".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items()), encoding="utf-8")
    return path


def wrk(url: str, script: Path | None, connections: int = 8) -> float:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{DURATION}s", "--latency"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            rate = float(line.split()[1])
        if "Non-2xx" in line:
            print("   ", line.strip())
        if line.strip().startswith(("50%", "99%")):
            print("    latency", line.strip())
    return rate


PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"system": "urn:yilian:member:county:patient-id", "value": "0001"}],
    "name": [{"family": "张", "given": ["三"], "text": "张三"}],
    "gender": "male",
    "birthDate": "1980-05-17",
    "telecom": [{"system": "phone", "value": "13800000000"}],
    "address": [{"text": "浙江省杭州市西湖区", "city": "杭州市", "state": "浙江省"}],
}


OBSERVATION = {
    "resourceType": "Observation",
    "status": "final",
    "code": {"coding": [{"system": "http://loinc.org", "code": "718-7"}]},
    "valueQuantity": {"value": 132, "unit": "g/L", "system": "http://unitsofmeasure.org", "code": "g/L"},
}


def synthea_bundle(n_encounters: int = 20, obs_per_encounter: int = 9) -> dict:
    """A Synthea-shaped patient record: patient, encounters, observations, reports (≈ 200 resources)."""
    pid = f"urn:uuid:{uuid.uuid4()}"
    entries = [{"fullUrl": pid, "resource": PATIENT, "request": {"method": "POST", "url": "Patient"}}]
    for e in range(n_encounters):
        enc = f"urn:uuid:{uuid.uuid4()}"
        entries.append(
            {
                "fullUrl": enc,
                "resource": {
                    "resourceType": "Encounter",
                    "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                    "subject": {"reference": pid},
                    "period": {
                        "start": f"2025-{e % 12 + 1:02d}-10T09:00:00+08:00",
                        "end": f"2025-{e % 12 + 1:02d}-10T09:30:00+08:00",
                    },
                },
                "request": {"method": "POST", "url": "Encounter"},
            }
        )
        obs_refs = []
        for o in range(obs_per_encounter):
            ou = f"urn:uuid:{uuid.uuid4()}"
            obs_refs.append({"reference": ou})
            entries.append(
                {
                    "fullUrl": ou,
                    "resource": {
                        "resourceType": "Observation",
                        "status": "final",
                        "category": [
                            {
                                "coding": [
                                    {
                                        "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                        "code": "laboratory",
                                    }
                                ]
                            }
                        ],
                        "code": {
                            "coding": [
                                {"system": "http://loinc.org", "code": "718-7", "display": "Hemoglobin"}
                            ],
                            "text": "血红蛋白",
                        },
                        "subject": {"reference": pid},
                        "encounter": {"reference": enc},
                        "effectiveDateTime": f"2025-{e % 12 + 1:02d}-10T09:10:00+08:00",
                        "valueQuantity": {
                            "value": 120 + o,
                            "unit": "g/L",
                            "system": "http://unitsofmeasure.org",
                            "code": "g/L",
                        },
                    },
                    "request": {"method": "POST", "url": "Observation"},
                }
            )
        entries.append(
            {
                "resource": {
                    "resourceType": "DiagnosticReport",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "58410-2"}]},
                    "subject": {"reference": pid},
                    "encounter": {"reference": enc},
                    "result": obs_refs,
                    "issued": "2025-01-10T10:00:00+08:00",
                },
                "request": {"method": "POST", "url": "DiagnosticReport"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="yilian-bench-"))
    port = free_port()
    proc = start_server(tmp / "bench.db", port)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        if not shutil.which("wrk"):
            raise SystemExit("wrk not found: apt-get install wrk")
        post = tmp / "post.lua"
        body = json.dumps(PATIENT, ensure_ascii=False).replace("\\", "\\\\").replace('"', '\\"')
        post.write_text(
            'wrk.method = "POST"\n'
            f'wrk.body = "{body}"\n'
            'wrk.headers["Content-Type"] = "application/fhir+json"\n'
            'wrk.headers["Prefer"] = "return=minimal"\n'
            f'wrk.headers["Authorization"] = "{ADMIN["Authorization"]}"\n',
            encoding="utf-8",
        )
        print(f"create (POST Patient, 8 connections, {DURATION}s):")
        create_rate = wrk(f"{base}/Patient", post)
        print(f"  create: {create_rate:,.0f}/s (target >= 1,000/s)")
        # The member's own patient (it registers it) and an Observation of hers: a member's read checks
        # the patient's care-relationship CareTeam; the admin's is the unrestricted reference.
        pid = httpx.post(f"{base}/Patient", json=PATIENT, headers=MEMBER).json()["id"]
        obs = {**OBSERVATION, "subject": {"reference": f"Patient/{pid}"}}
        oid = httpx.post(f"{base}/Observation", json=obs, headers=MEMBER).json()["id"]
        admin, member = header_script(tmp / "admin.lua", ADMIN), header_script(tmp / "member.lua", MEMBER)
        rates = {}
        for label, url, script in (
            ("admin, Patient", f"{base}/Patient/{pid}", admin),
            ("member, Patient", f"{base}/Patient/{pid}", member),
            ("admin, Observation", f"{base}/Observation/{oid}", admin),
            ("member, Observation", f"{base}/Observation/{oid}", member),
        ):
            who, kind = label.split(", ")
            print(f"read (GET {kind}/id as {who}, 8 connections, {DURATION}s):")
            rates[label] = wrk(url, script)
            print(f"  read: {rates[label]:,.0f}/s (target >= 3,000/s)")
        for kind in ("Patient", "Observation"):
            ratio = rates[f"member, {kind}"] / rates[f"admin, {kind}"]
            print(f"  member / admin read of {kind}, same run: {ratio:.2f}")
        bundles = [orjson.dumps(synthea_bundle()) for _ in range(16)]
        per_bundle = len(synthea_bundle()["entry"])
        size = per_bundle * len(bundles)
        headers = {"Content-Type": "application/fhir+json"}
        for parallel in (1, 2):
            with httpx.Client(timeout=120) as warm:
                warm.post(
                    base, content=orjson.dumps(synthea_bundle(2, 2)), headers={**headers, **ADMIN}
                ).raise_for_status()

            async def upload(chunk: list[bytes]) -> None:
                async with httpx.AsyncClient(timeout=120) as client:
                    for body in chunk:
                        (
                            await client.post(base, content=body, headers={**headers, **ADMIN})
                        ).raise_for_status()

            async def run(parallel: int = parallel) -> float:
                started = time.perf_counter()
                await asyncio.gather(*(upload(bundles[i::parallel]) for i in range(parallel)))
                return time.perf_counter() - started

            elapsed = asyncio.run(run())
            print(
                f"  transaction ingest, {parallel} uploader(s): {size / elapsed:,.0f} resources/s "
                f"({len(bundles)} bundles x {per_bundle} resources, target >= 3,000/s)"
            )
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
