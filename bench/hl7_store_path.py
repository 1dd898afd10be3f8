"""The HL7 store path alone: translate bench messages, then run their transaction Bundles against a SQLite
hub in rounds of `--group` messages (as the pipeline merges them), without MLLP, journal or load process.

Why beside `hl7_ingest.py`: end to end, the second process and the machine's drift hide changes of a
few percent; this measures what a round costs the event loop, with less noise. `--group 1` is a quiet
hour (one message per round), the default 17 is what the pipeline forms at ~500 messages/s.

    .venv/bin/python bench/hl7_store_path.py [--messages 3000] [--group 17]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hl7_load import message  # noqa: E402

from adapters.hl7v2.coalesce import merge  # noqa: E402
from adapters.hl7v2.parse import parse  # noqa: E402
from adapters.hl7v2.router import build_router  # noqa: E402
from adapters.hl7v2.transaction import Context  # noqa: E402
from fhir_server.hub import open_hub, tune_for_serving  # noqa: E402
from fhir_server.interactions.bundles import transaction  # noqa: E402
from fhir_server.settings import Settings  # noqa: E402


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--group", type=int, default=17, help="messages per store transaction")
    args = parser.parse_args()
    router, tz = build_router(), ZoneInfo("Asia/Shanghai")
    started = time.perf_counter()
    translations = []
    for i in range(args.messages):
        parsed = parse(message(i, "sp"), "UNICODE UTF-8", {})
        translate = router.resolve(parsed.message_type, parsed.trigger)
        translations.append(translate(parsed, Context(dt.datetime.now(tz), tz, {})))
    translate_us = (time.perf_counter() - started) / args.messages * 1e6
    with tempfile.TemporaryDirectory() as tmp:
        async with open_hub(Settings(db=Path(tmp) / "hub.db")) as hub:
            tune_for_serving()  # as `yilian serve` does
            bundles = [
                merge([t.bundle for t in translations[i : i + args.group]])
                for i in range(0, args.messages, args.group)
            ]
            started = time.perf_counter()
            for bundle in bundles:
                await transaction(hub.service, bundle, base_url="http://hub/fhir")
            elapsed = time.perf_counter() - started
    print(
        f"store path, {args.group} message(s) per transaction: {elapsed / args.messages * 1e6:,.0f} µs per "
        f"message ({args.messages / elapsed:,.0f} msg/s); translation {translate_us:,.0f} µs per message"
    )


if __name__ == "__main__":
    asyncio.run(main())
