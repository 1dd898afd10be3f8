"""`yilian`: the composition root. Settings → store → app → listeners (FHIR HTTP, MLLP, DICOM).

Flags override `YILIAN_*` environment variables, which override defaults. Listeners bind to 127.0.0.1
unless told otherwise: the hub holds patient data.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from fhir_server.settings import Settings

LOGGER = logging.getLogger("yilian")

SubcommandAdder = Callable[[Any], None]


def _serve_parser(subparsers: Any) -> None:
    serve = subparsers.add_parser("serve", help="run the hub: FHIR API, MLLP and DICOM listeners")
    serve.add_argument("--host", help="FHIR API bind address (YILIAN_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="FHIR API port (YILIAN_PORT, default 8080)")
    serve.add_argument("--db", type=Path, help="SQLite database file (YILIAN_DB, default ./data/yilian.db)")
    serve.add_argument(
        "--storage", choices=["sqlite", "memory", "mongodb"], help="storage backend (YILIAN_STORAGE)"
    )
    serve.add_argument("--mllp-host", help="MLLP bind address (YILIAN_MLLP_HOST)")
    serve.add_argument("--mllp-port", type=int, help="MLLP port, 0 disables (YILIAN_MLLP_PORT, default 2575)")
    serve.add_argument("--dicom-host", help="DICOM bind address (YILIAN_DICOM_HOST)")
    serve.add_argument(
        "--dicom-port", type=int, help="DICOM port, 0 disables (YILIAN_DICOM_PORT, default 11112)"
    )
    serve.add_argument("--dicom-aet", help="DICOM AE title (YILIAN_DICOM_AET, default YILIAN)")
    serve.add_argument("--log-level", default="INFO")
    serve.set_defaults(func=_serve)


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        key: value
        for key in (
            "host",
            "port",
            "db",
            "storage",
            "mllp_host",
            "mllp_port",
            "dicom_host",
            "dicom_port",
            "dicom_aet",
        )
        if (value := getattr(args, key, None)) is not None
    }
    return Settings(**overrides)


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = settings_from(args)
    from adapters.base import ListenerError
    from adapters.hl7v2.tls import TlsConfigError
    from fhir_server.serve import Terminated, UnsafeExposure, serve

    try:
        asyncio.run(serve(settings))
    except (UnsafeExposure, TlsConfigError, ListenerError) as exc:
        LOGGER.error("%s", exc)
        return 2
    except (KeyboardInterrupt, Terminated):
        pass
    return 0


def _adapter_commands() -> list[SubcommandAdder]:
    from adapters.dicom import commands as dicom_commands
    from adapters.hl7v2 import commands as hl7_commands

    adders: list[SubcommandAdder] = [hl7_commands.add_parser, dicom_commands.add_parser]
    return adders


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yilian", description="YiLian (医联) FHIR interoperability hub")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _serve_parser(subparsers)
    for add in _adapter_commands():
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
