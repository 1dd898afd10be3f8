"""Load generator for bench/hl7_ingest.py, run as its own process so it does not share the server's
CPU or event loop: realistic ADT^A04 (6 segments, Chinese text) and ORU^R01 messages over MLLP.

    python bench/hl7_load.py --port P throughput --messages N --connections 4 --window 64
    python bench/hl7_load.py --port P latency --rate 500 --seconds 6 --connections 4
Prints one JSON line with the result.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adapters.hl7v2.client import MllpClient  # noqa: E402
from terminology.cn_resident_id import make  # noqa: E402

SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超秀兰霞平刚桂英"


def adt_a04(i: int, run: str) -> bytes:
    """A realistic 6-segment ADT^A04 with Chinese text (MSH EVN PID PD1 NK1 PV1), a new patient each."""
    family, given = SURNAMES[i % len(SURNAMES)], GIVEN[i % len(GIVEN)] + GIVEN[(i * 7) % len(GIVEN)]
    rid = make("330183", dt.date(1950 + i % 60, 1 + i % 12, 1 + i % 28), i % 1000)
    segs = [
        f"MSH|^~\\&|HIS|FYXRMYY|YILIAN|YLHUB|20240315083000||ADT^A04^ADT_A01|{run}-A{i}|P|2.5|||||CHN|"
        "UNICODE UTF-8",
        "EVN|A04|20240315083000",
        f"PID|1||MZ{run}{i:07d}^^^FYXRMYY^MR~{rid}^^^^NNCHN||{family}^{given}^^^^^L^I~Wang^Wei^^^^^L^A||"
        f"{rid[6:14]}|{'M' if i % 2 else 'F'}|||"
        f"富春街道江滨路{i % 200}号^^杭州市^浙江省^311400^CHN^H^^富阳区||"
        f"^PRN^CP^^^^138{i:08d}",
        "PD1|||富阳区第一人民医院^^FYXRMYY",
        f"NK1|1|{family}^建国|FTH^父亲|||^PRN^CP^^^^13900000000",
        f"PV1|1|O|内科门诊^201^1^FYXRMYY||||D001^王^医生|||MED|||||||||MZV{run}{i:07d}|||||||||||||||||||||||||"
        "20240315083000",
    ]
    return ("\r".join(segs) + "\r").encode()


def oru_r01(i: int, run: str) -> bytes:
    segs = [
        f"MSH|^~\\&|LIS|FYXRMYY|YILIAN|YLHUB|20240315110000||ORU^R01^ORU_R01|{run}-R{i}|P|2.5|||||CHN|"
        "UNICODE UTF-8",
        f"PID|1||MZ{run}{i:07d}^^^FYXRMYY^MR||王^伟^^^^^L^I||19800512|M",
        f"OBR|1|PO{run}{i}^FYXRMYY|LAB{run}{i}^FYXRMYY|58410-2^血常规^LN|||202403150930|||||||||||||||"
        "20240315105500||LAB|F",
        "OBX|1|NM|6690-2^白细胞计数^LN||12.5|10*9/L^10*9/L^UCUM|3.5-9.5|H|||F",
        "OBX|2|NM|718-7^血红蛋白^LN||135|g/L^g/L^UCUM|130-175|N|||F",
        "OBX|3|ST|5767-9^尿液外观^LN||淡黄色，清亮||||||F",
    ]
    return ("\r".join(segs) + "\r").encode()


def message(i: int, run: str) -> bytes:
    return oru_r01(i, run) if i % 2 else adt_a04(i, run)


async def throughput(port: int, total: int, connections: int, window: int, run: str) -> float:
    per = total // connections

    async def one(c: int) -> None:
        async with MllpClient("127.0.0.1", port, timeout=120) as client:
            sent = received = 0
            while received < per:
                while sent < per and sent - received < window:
                    client.send_nowait(message(c * per + sent, run))
                    sent += 1
                await client.drain()
                ack = await client.receive()
                assert b"MSA|AA" in ack, ack
                received += 1

    start = time.perf_counter()
    await asyncio.gather(*(one(c) for c in range(connections)))
    return per * connections / (time.perf_counter() - start)


async def latency(port: int, rate: float, seconds: float, connections: int, run: str) -> list[float]:
    """Offer `rate` msg/s spread over connections; each ACK's latency from its send time."""
    latencies: list[float] = []
    interval = connections / rate
    count = int(rate * seconds / connections)

    async def one(c: int) -> None:
        async with MllpClient("127.0.0.1", port, timeout=60) as client:
            sent_at: list[float] = []

            async def reader() -> None:
                for k in range(count):
                    ack = await client.receive()
                    assert b"MSA|AA" in ack, ack
                    latencies.append(time.perf_counter() - sent_at[k])

            task = asyncio.create_task(reader())
            start = time.perf_counter() + c * interval / connections
            for k in range(count):
                delay = start + k * interval - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                sent_at.append(time.perf_counter())
                client.send_nowait(message(10_000_000 + c * count + k, run))
            await task

    await asyncio.gather(*(one(c) for c in range(connections)))
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--run", default="r")
    parser.add_argument("--connections", type=int, default=4)
    sub = parser.add_subparsers(dest="mode", required=True)
    tp = sub.add_parser("throughput")
    tp.add_argument("--messages", type=int, default=4000)
    tp.add_argument("--window", type=int, default=64)
    lat = sub.add_parser("latency")
    lat.add_argument("--rate", type=float, default=500)
    lat.add_argument("--seconds", type=float, default=6)
    args = parser.parse_args()
    if args.mode == "throughput":
        rate = await throughput(args.port, args.messages, args.connections, args.window, args.run)
        print(json.dumps({"rate": rate}))
    else:
        latencies = await latency(args.port, args.rate, args.seconds, args.connections, args.run)
        print(json.dumps({"latencies": latencies}))


if __name__ == "__main__":
    asyncio.run(main())
