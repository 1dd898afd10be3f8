"""What every adapter is made of: a pure Translator and a Sink that applies its Bundles.

Adapters never touch storage. A translated HL7 message or DICOM study is a FHIR transaction Bundle handed
to a `Sink`: in-process (`fhir_server.interactions.ingest.InProcessSink`) or a remote FHIR base URL
(`HttpSink`). Both raise `fhir_server.errors.FhirError` subclasses, so the MLLP and DICOM edges map
one error tree to ACKs and DIMSE statuses.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import httpx

from fhir_server.errors import (
    BadRequest,
    Conflict,
    FhirError,
    Forbidden,
    Gone,
    Issue,
    MethodNotAllowed,
    NotFound,
    PreconditionFailed,
    StorageError,
    Unauthorized,
    Unprocessable,
)
from fhir_server.model.access_record import AccessRecord

JsonObject = dict[str, Any]


class Sink(Protocol):
    """Where adapter output goes: the same FHIR interactions an HTTP client would use."""

    async def submit(self, bundle: JsonObject, *, durable: bool = True) -> JsonObject:
        """Apply a `transaction` or `batch` Bundle and return the response Bundle.

        The Bundle is the Sink's from then on: the in-process Sink rewrites its references in place, so
        a caller that may submit it again keeps a copy or builds it again.

        `durable=False` may return before the result is on disk: for an adapter that journals its input
        durably itself and calls `sync()` before it marks that input done (HL7 v2)."""
        ...

    async def sync(self) -> None:
        """Make every submit so far durable."""
        ...

    async def search(
        self, resource_type: str, params: list[tuple[str, str]], *, member: str | None = None
    ) -> JsonObject:
        """Run a FHIR search and return the `searchset` Bundle (first page; follow `next` via params).
        `member`: search as that member's clients see (its care relationships), for a request a member's
        client made; a remote hub applies its own token's view instead."""
        ...

    async def read(self, resource_type: str, resource_id: str) -> JsonObject | None:
        """Return the current version, or None when absent or deleted."""
        ...

    def audit(self, record: AccessRecord) -> None:
        """Record an access the adapter served (a message applied, instances sent): an AuditEvent in
        the hub's trail. Returns at once; the trail writes in batches off the adapter's path."""
        ...


class AdapterError(Exception):
    """Base for failures inside an adapter that are not FHIR errors (framing, charset, DIMSE)."""


class ListenerError(AdapterError):
    """A listener cannot open its port (taken by another process, or not an address of this host):
    the hub does not start, and says which listener and why in one line."""


def bind_failure(exc: OSError) -> str:
    """Why a port could not be opened, without asyncio's restatement of the address."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


_STATUS_ERRORS: dict[int, type[FhirError]] = {
    400: BadRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    405: MethodNotAllowed,
    409: Conflict,
    410: Gone,
    412: PreconditionFailed,
    422: Unprocessable,
}


def error_from_outcome(status: int, body: JsonObject | None) -> FhirError:
    """Turn a remote server's HTTP status + OperationOutcome back into our error tree."""
    issues = [
        Issue(
            str(i.get("severity", "error")),
            str(i.get("code", "exception")),
            str(i.get("diagnostics") or i.get("details", {}).get("text") or ""),
            tuple(i.get("expression") or ()),
        )
        for i in (body or {}).get("issue", [])
        if isinstance(i, dict)
    ]
    message = "; ".join(i.diagnostics for i in issues if i.diagnostics) or f"HTTP {status}"
    cls = _STATUS_ERRORS.get(status)
    if cls is None:
        return StorageError(message, issues)
    return cls(message, issues)


class HttpSink:
    """A Sink for a remote FHIR server (ours or any other) reached over HTTP."""

    def __init__(
        self, base_url: str, client: httpx.AsyncClient | None = None, *, token: str | None = None
    ) -> None:
        """`token`: sent as `Authorization: Bearer <token>` (a hub with `YILIAN_API_TOKENS` needs one)."""
        self._base = base_url.rstrip("/")
        self._client = client or httpx.AsyncClient(timeout=30.0)
        self._headers = {"Accept": "application/fhir+json", "Content-Type": "application/fhir+json"}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"

    async def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = self._headers
        try:
            return await self._client.request(method, url, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise StorageError(f"FHIR server at {self._base} unreachable: {exc}") from exc

    async def submit(self, bundle: JsonObject, *, durable: bool = True) -> JsonObject:
        """A remote server's answer is durable as it defines it: `durable` cannot ask for less."""
        resp = await self._send("POST", self._base, json=bundle)
        if resp.status_code >= 400:
            raise error_from_outcome(resp.status_code, _json_or_none(resp))
        result: JsonObject = resp.json()
        return result

    async def sync(self) -> None:
        """Nothing to do: every answered submit is as durable as the remote server makes it."""

    def audit(self, record: AccessRecord) -> None:
        """Nothing to do: the remote server audits the requests this Sink makes to it."""

    async def search(
        self, resource_type: str, params: list[tuple[str, str]], *, member: str | None = None
    ) -> JsonObject:
        resp = await self._send("GET", f"{self._base}/{resource_type}", params=params)
        if resp.status_code >= 400:
            raise error_from_outcome(resp.status_code, _json_or_none(resp))
        result: JsonObject = resp.json()
        return result

    async def read(self, resource_type: str, resource_id: str) -> JsonObject | None:
        resp = await self._send("GET", f"{self._base}/{resource_type}/{resource_id}")
        if resp.status_code in (404, 410):
            return None
        if resp.status_code >= 400:
            raise error_from_outcome(resp.status_code, _json_or_none(resp))
        result: JsonObject = resp.json()
        return result

    async def aclose(self) -> None:
        await self._client.aclose()


def _json_or_none(resp: httpx.Response) -> JsonObject | None:
    try:
        body = resp.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def add_token_argument(parser: Any) -> None:
    """`--token` for a command that calls the hub's HTTP API (default `YILIAN_TOKEN`)."""
    parser.add_argument(
        "--token",
        default=os.environ.get("YILIAN_TOKEN") or None,
        help="bearer token for the hub's API (YILIAN_TOKEN); needed when the hub has YILIAN_API_TOKENS",
    )
