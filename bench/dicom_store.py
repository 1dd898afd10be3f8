"""C-STORE throughput: storescu → YiLian SCP vs dcmtk storescp (the physical anchor) vs Orthanc.

Prints instances/s over one association and over four parallel associations, and for YiLian how long
after the last instance the ImagingStudy (read over FHIR HTTP) shows every instance. TCP_NODELAY=1 is
set for the dcmtk tools and Orthanc (without it they stall on delayed ACKs at ~20 instances/s).

    .venv/bin/python bench/dicom_store.py [--count 300] [--size 512] [--runs 3] [--workers 2,4]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, TCP_NODELAY="1")


@functools.cache
def dcmtk(name: str) -> str:
    """Absolute path of the dcmtk tool `name` (pynetdicom installs same-named scripts into the venv)."""
    for folder in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(folder) / name
        if path.is_file() and os.access(path, os.X_OK):
            probe = subprocess.run([str(path), "--version"], capture_output=True, text=True)
            if "dcmtk" in (probe.stdout + probe.stderr).lower():
                return str(path)
    sys.exit(f"dcmtk's {name} is required (apt-get install dcmtk)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} never opened")


def make_study(folder: Path, count: int, size: int) -> tuple[str, list[Path]]:
    study, series = generate_uid(), generate_uid()
    pixels = bytes(range(256)) * (size * size * 2 // 256)
    files = []
    for i in range(count):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2" if i % 2 == 0 else "1.2.840.10008.5.1.4.1.1.4"
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientName, ds.PatientID, ds.IssuerOfPatientID = "Bench^Patient=测试^病人", "B001", "BENCH"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20261123", "101010", "BENCH1"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, i + 1
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return study, files


def send(port: int, aet: str, files: list[Path], parallel: int) -> float:
    chunks = [files[i::parallel] for i in range(parallel)]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                dcmtk("storescu"),
                "-xe",
                "-aet",
                "BENCH",
                "-aec",
                aet,
                "127.0.0.1",
                str(port),
                *map(str, chunk),
            ],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for chunk in chunks
    ]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode(errors='replace')[-500:]}")
    return time.perf_counter() - start


class Target:
    name = ""
    aet = ""
    port = 0

    def start(self, work: Path) -> None: ...
    def stop(self) -> None: ...
    def after_send(self, study: str, count: int) -> float | None:
        return None


class Storescp(Target):
    name, aet = "dcmtk storescp", "STORESCP"

    def start(self, work: Path) -> None:
        self.port = free_port()
        out = work / "storescp"
        out.mkdir()
        cmd = [dcmtk("storescp"), "--fork", "-aet", self.aet, "-od", str(out), str(self.port)]
        self.proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


class Orthanc(Target):
    name, aet = "Orthanc", "ORTHANC"

    def start(self, work: Path) -> None:
        self.port, http = free_port(), free_port()
        config = {
            "Name": "bench",
            "StorageDirectory": str(work / "orthanc"),
            "IndexDirectory": str(work / "orthanc"),
            "DicomAet": self.aet,
            "DicomPort": self.port,
            "HttpPort": http,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "Plugins": [],
        }
        cfg = work / "orthanc.json"
        cfg.write_text(json.dumps(config))
        self.proc = subprocess.Popen(
            ["Orthanc", str(cfg)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port, 60)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()


class Yilian(Target):
    name, aet = "YiLian", "YILIAN"

    def __init__(self, workers: int = 2, fsync: bool = True) -> None:
        self.workers, self.fsync = workers, fsync
        self.name = f"YiLian {workers} workers" + ("" if fsync else " no-fsync")

    def start(self, work: Path) -> None:
        self.port, self.http = free_port(), free_port()
        db = str(work / "yilian" / "hub.db")
        cmd = [
            sys.executable, "-m", "fhir_server.cli", "serve", "--port", str(self.http),
            "--dicom-port", str(self.port), "--mllp-port", "0", "--db", db, "--log-level", "WARNING",
        ]  # fmt: skip
        (work / "yilian").mkdir()
        env = dict(
            os.environ, YILIAN_DICOM_WORKERS=str(self.workers), YILIAN_DICOM_FSYNC=str(self.fsync).lower()
        )
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port, 60)
        wait_port(self.http, 60)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()

    def after_send(self, study: str, count: int) -> float | None:
        """Seconds from the last instance acknowledged until the ImagingStudy lists all of them."""
        start = time.perf_counter()
        url = f"http://127.0.0.1:{self.http}/fhir/ImagingStudy?identifier=urn:dicom:uid%7Curn:oid:{study}"
        while time.perf_counter() - start < 60:
            with urllib.request.urlopen(url) as resp:
                body = json.load(resp)
            entries = body.get("entry", [])
            if entries and entries[0]["resource"].get("numberOfInstances") == count:
                return time.perf_counter() - start
            time.sleep(0.05)
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", type=int, default=512, help="rows = columns (512 → 0.5 MB per instance)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--targets", default="storescp,orthanc,yilian")
    parser.add_argument("--workers", default="2", help="YiLian storage worker processes (e.g. 2,4)")
    parser.add_argument(
        "--no-fsync", action="store_true", help="also run YiLian without fsync (cost of durability)"
    )
    args = parser.parse_args()
    wanted = {t.strip() for t in args.targets.split(",")}
    targets: list[Target] = []
    if "storescp" in wanted:
        targets.append(Storescp())
    if "orthanc" in wanted:
        if shutil.which("Orthanc"):
            targets.append(Orthanc())
        else:
            print("Orthanc: not installed, skipped")
    if "yilian" in wanted:
        for workers in (int(w) for w in args.workers.split(",")):
            targets.append(Yilian(workers))
            if args.no_fsync:
                targets.append(Yilian(workers, fsync=False))
    dcmtk("storescu")  # resolved (and cached) before anything is timed
    print(f"{args.count} instances of {args.size}x{args.size}x16 bit, {args.runs} round(s), TCP_NODELAY=1")
    print("targets run interleaved, one send each per round: this machine's speed drifts by 2x over a minute")
    rates: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for target in targets:
            home = work / target.name.replace(" ", "_").replace("-", "_")
            home.mkdir()
            target.start(home)
        # Every study is generated before anything is timed and none is deleted until the end: deleting
        # 150 MB between sends made the next target's fsyncs wait on the filesystem's discards.
        rounds = [(parallel, run) for parallel in (1, 4) for run in range(args.runs)]
        studies = {
            (target.name, parallel, run): make_study(
                _fresh(work / f"src-{i}-{parallel}-{run}"), args.count, args.size
            )
            for parallel, run in rounds
            for i, target in enumerate(targets)
        }
        try:
            for parallel, run in rounds:
                for target in targets:
                    study, files = studies[(target.name, parallel, run)]
                    rate = _timed_send(target, study, files, parallel)
                    rates.setdefault((target.name, parallel), []).append(rate)
        finally:
            for target in targets:
                target.stop()
    print("median instances/s (and as a fraction of storescp's median in the same rounds)")
    for parallel in (1, 4):
        anchor = statistics.median(rates.get(("dcmtk storescp", parallel), [0.0]))
        for target in targets:
            median = statistics.median(rates[(target.name, parallel)])
            share = f" = {median / anchor:.2f} x storescp" if anchor else ""
            print(f"  {target.name:22s} {parallel} assoc: {median:7.1f}{share}")


def _fresh(folder: Path) -> Path:
    folder.mkdir()
    return folder


def _timed_send(target: Target, study: str, files: list[Path], parallel: int) -> float:
    os.sync()  # nothing written before (inputs, other targets' files) is flushed while this one is timed
    seconds = send(target.port, target.aet, files, parallel)
    fresh = target.after_send(study, len(files))
    extra = f", ImagingStudy complete {fresh:.2f} s after last ack" if fresh is not None else ""
    rate = len(files) / seconds
    print(f"{target.name:22s} {parallel} assoc: {rate:7.1f} instances/s ({seconds:.2f} s){extra}", flush=True)
    return rate


if __name__ == "__main__":
    main()
