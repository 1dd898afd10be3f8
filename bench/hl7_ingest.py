"""HL7 v2 ingest benchmark: MLLP → journal (fsync) → parse → map → SQLite hub → ACK, in one process.

The server (hub + MLLP listener) runs in this process; the load comes from `bench/hl7_load.py` in a
separate process, as member systems would. Prints: sustained throughput over 4 concurrent connections
(each pipelining a window of messages), ACK latency percentiles at a fixed offered rate (default
500 msg/s), and optionally a cProfile of the server during the throughput run. `--null-sink` measures
the adapter alone (journal, parse, map, ACK) with transactions discarded.

    .venv/bin/python bench/hl7_ingest.py [--messages 4000] [--rate 500] [--seconds 6] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.hl7v2.listener import start_mllp  # noqa: E402
from adapters.hl7v2.outbound import OruDelivery  # noqa: E402
from fhir_server.hub import open_hub, tune_for_serving  # noqa: E402
from fhir_server.settings import Settings  # noqa: E402


class NullSink:
    """Accepts every transaction without storing it: measures the adapter's own ceiling."""

    async def submit(self, bundle: dict[str, Any], *, durable: bool = True) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": []}

    async def sync(self) -> None:
        pass

    async def search(
        self, resource_type: str, params: list[tuple[str, str]], *, member: str | None = None
    ) -> dict[str, Any]:
        return {"resourceType": "Bundle", "type": "searchset", "entry": []}

    async def read(self, resource_type: str, resource_id: str) -> dict[str, Any] | None:
        return None

    def audit(self, record: Any) -> None:
        pass


async def load(port: int, run: str, *args: str, connections: int = 2) -> dict[str, Any]:
    """Run the load generator in its own process and return its JSON result."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__).with_name("hl7_load.py")), "--port", str(port), "--run", run,
        "--connections", str(connections), *args, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed ({proc.returncode})")
    result: dict[str, Any] = json.loads(out)
    return result


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--window", type=int, default=64)
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=6)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--null-sink", action="store_true", help="adapter only: transactions are not stored")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(db=Path(tmp) / "hub.db")
        async with open_hub(settings) as hub:
            sink: Any = NullSink() if args.null_sink else hub.sink
            service = await start_mllp(settings, sink, port=0)
            delivery = OruDelivery(settings, sink)  # wired as `yilian serve` wires it: final reports enqueue
            if not args.null_sink:
                hub.service.events.subscribe(delivery.on_change)
                delivery.start()
            tune_for_serving()  # as `yilian serve` does once its listeners are up
            try:
                await load(service.port, "warm", "throughput", "--messages", "200", "--window", "16")
                profiler = cProfile.Profile() if args.profile else None
                if profiler:
                    profiler.enable()
                result = await load(
                    service.port, "tp", "throughput", "--messages", str(args.messages),
                    "--window", str(args.window), connections=args.connections,
                )  # fmt: skip
                rate = result["rate"]
                if profiler:
                    profiler.disable()
                what = "adapter only (null sink)" if args.null_sink else "end to end (SQLite hub)"
                print(
                    f"throughput [{what}]: {rate:,.0f} msg/s ({args.messages} ADT^A04/ORU^R01, "
                    f"{args.connections} connections, window {args.window})"
                )
                if hub.review is not None and not args.null_sink:
                    # Reviews wait for writes to pause (at most 10% of the time during a burst):
                    # what is left after the burst, timed beside the burst's cost per message.
                    left = hub.review.pending
                    started = time.perf_counter()
                    await hub.review.drain()
                    spent = time.perf_counter() - started
                    if left:
                        each, per_message = spent / left * 1000, 1000 / rate
                        print(
                            f"match review after the burst: {left} records, {each:.2f} ms each "
                            f"(ingest {per_message:.2f} ms per message; ratio {each / per_message:.2f})"
                        )
                lat = (
                    await load(
                        service.port,
                        "lat",
                        "latency",
                        "--rate",
                        str(args.rate),
                        "--seconds",
                        str(args.seconds),
                        connections=args.connections,
                    )  # fmt: skip
                )["latencies"]
                lat.sort()
                q = statistics.quantiles(lat, n=100)
                print(
                    f"ACK latency at {args.rate:.0f} msg/s offered ({len(lat)} messages): "
                    f"p50 {q[49] * 1000:.1f} ms, "
                    f"p90 {q[89] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms, max {lat[-1] * 1000:.1f} ms"
                )
                await service.pipeline.sync_outcomes()  # applied outcomes are journaled after a store sync
                counts = service.journal.counts()
                print(f"journal: {counts}")
                if profiler:
                    out = io.StringIO()
                    st = pstats.Stats(profiler, stream=out)
                    st.sort_stats("tottime").print_stats(25)
                    st.sort_stats("cumulative").print_stats(
                        "hl7v2|ingest|service.py|bundles|write.py|store.py|person.py|merge.py|match", 50
                    )
                    print(out.getvalue())
            finally:
                await service.close()
                await delivery.close()


if __name__ == "__main__":
    asyncio.run(main())
