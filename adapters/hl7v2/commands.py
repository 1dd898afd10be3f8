"""`yilian hl7 ...`: list the journal, replay a failed message, list or re-queue outbound deliveries,
send messages to any MLLP endpoint.

These are CLI edges: they print, and return a process exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from adapters.base import HttpSink, add_token_argument
from adapters.hl7v2.client import MllpClientError, send_all
from adapters.hl7v2.journal import STATUSES, Journal
from adapters.hl7v2.outbound import IDLE_POLL
from adapters.hl7v2.outbox import FINAL_STATES, Outbox
from adapters.hl7v2.parse import ParseError, is_batch, split_batch
from adapters.hl7v2.pipeline import Pipeline
from adapters.hl7v2.tls import client_context
from fhir_server.settings import Settings


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    hl7 = subparsers.add_parser("hl7", help="HL7 v2: journal, replay, outbound, send")
    sub = hl7.add_subparsers(dest="hl7_command", required=True)

    journal = sub.add_parser("journal", help="list journaled messages")
    _journal_option(journal)
    journal.add_argument("--status", choices=STATUSES, help="only entries with this status")
    journal.add_argument("--limit", type=int, default=50)
    journal.add_argument("--after", type=int, default=0, help="only entries with id greater than this")
    journal.set_defaults(func=_journal)

    replay = sub.add_parser("replay", help="re-process a journaled message (after fixing its cause)")
    replay.add_argument("id", type=int)
    _journal_option(replay)
    replay.add_argument("--fhir-base", default="http://127.0.0.1:8080/fhir", help="FHIR server to apply to")
    add_token_argument(replay)
    replay.set_defaults(func=_replay)

    outbound = sub.add_parser("outbound", help="list outbound ORU deliveries, or re-queue a finished one")
    _journal_option(outbound)
    outbound.add_argument("--status", choices=("pending", *FINAL_STATES), help="only these deliveries")
    outbound.add_argument("--limit", type=int, default=50)
    outbound.add_argument(
        "--retry", type=int, metavar="ID", help="make a failed/rejected/dropped delivery due again"
    )
    outbound.set_defaults(func=_outbound)

    send = sub.add_parser("send", help="send the messages of a file (single, several, or FHS/BHS batch)")
    send.add_argument("file", type=Path)
    send.add_argument("--host", default="127.0.0.1")
    send.add_argument("--port", type=int, default=2575)
    send.add_argument("--timeout", type=float, default=30.0)
    send.add_argument(
        "--tls", action="store_true", help="MLLP over TLS (verifies the listener's certificate)"
    )
    send.add_argument(
        "--ca", type=Path, help="with --tls: CA file to verify the listener (default: system CAs)"
    )
    send.add_argument("--cert", type=Path, help="with --tls: client certificate (PEM) for mutual TLS")
    send.add_argument("--key", type=Path, help="with --cert: its private key (PEM)")
    send.set_defaults(func=_send)


def _journal_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--journal", type=Path, default=None, help="journal file (default: beside the database)"
    )


def _journal_path(args: argparse.Namespace) -> Path:
    path: Path = args.journal or Settings().resolved_journal_path()
    if not path.exists():
        raise SystemExit(f"no HL7 journal at {path}")
    return path


def _open(args: argparse.Namespace) -> Journal:
    return Journal(_journal_path(args))


def _outbound(args: argparse.Namespace) -> int:
    outbox = Outbox(_journal_path(args))
    try:
        if args.retry is not None:
            if not outbox.requeue(args.retry):
                print(f"delivery {args.retry} is unknown or still pending", file=sys.stderr)
                return 1
            print(f"delivery {args.retry} is due again; the running hub sends it within {IDLE_POLL:.0f} s")
            return 0
        print(f"{'id':>6}  {'report':<54} {'version':>7} {'status':<9} {'tries':>5}  target / last error")
        for row in outbox.rows(args.status, args.limit):
            detail = " / ".join(filter(None, [row.target, row.last_error]))
            head = f"{row.id:>6}  {row.report:<54} {row.version:>7} {row.status:<9} {row.attempts:>5}"
            print(f"{head}  {detail}")
    finally:
        outbox.close()
    return 0


def _journal(args: argparse.Namespace) -> int:
    journal = _open(args)
    try:
        rows = journal.entries(args.status, args.limit, args.after)
        print(
            f"{'id':>7}  {'received':<32} {'status':<9} {'sender':<12} {'control id':<20} {'type':<12} error"
        )
        for e in rows:
            print(
                f"{e.id:>7}  {e.received_at:<32} {e.status:<9} {e.sending_facility[:12]:<12} "
                f"{(e.control_id or '-')[:20]:<20} {e.message_type[:12]:<12} {e.error or ''}"
            )
        counts = journal.counts()
        print("totals: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    finally:
        journal.close()
    return 0


def _replay(args: argparse.Namespace) -> int:
    return asyncio.run(_replay_async(args))


async def _replay_async(args: argparse.Namespace) -> int:
    journal = _open(args)
    sink = HttpSink(args.fhir_base, token=args.token)
    try:
        entry = journal.get(args.id)
        if entry is None:
            print(f"no journal entry {args.id}", file=sys.stderr)
            return 1
        if entry.status == "applied":
            print(f"entry {args.id} is already applied; nothing to do")
            return 0
        pipeline = Pipeline(Settings(), sink, journal)
        [outcome] = await pipeline.process_entries([entry])
        print(f"entry {args.id}: {outcome.status}" + (f" ({outcome.error})" if outcome.error else ""))
        return 0 if outcome.status == "applied" else 1
    finally:
        await sink.aclose()
        journal.close()


def _send(args: argparse.Namespace) -> int:
    try:
        raw = args.file.read_bytes()
    except OSError as exc:
        print(f"cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        messages = split_batch(raw) if is_batch(raw) or raw.count(b"MSH|") > 1 else [raw]
    except ParseError as exc:
        print(f"{args.file}: {exc.reason}", file=sys.stderr)
        return 2
    try:
        tls = client_context(args.ca, args.cert, args.key) if args.tls else None
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        print(f"TLS set-up failed: {exc}", file=sys.stderr)
        return 2
    try:
        answers = asyncio.run(send_all(args.host, args.port, messages, args.timeout, tls=tls))
    except MllpClientError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    failures = 0
    for answer in answers:
        msa = next((seg for seg in answer.split(b"\r") if seg.startswith(b"MSA")), b"MSA|??")
        code = msa.split(b"|")[1].decode("ascii", "replace") if b"|" in msa else "??"
        failures += code not in ("AA", "CA")
        print(answer.decode("utf-8", "replace").replace("\r", "\n").rstrip())
        print()
    print(f"{len(messages)} sent, {len(messages) - failures} accepted", file=sys.stderr)
    return 0 if failures == 0 else 1
