"""What each role of API client may ask, checked at the HTTP edge before anything runs.

Roles (`YILIAN_API_TOKENS`, `settings.ApiClientEntry`):
- `admin` (consortium operator; a token registered with a bare client name is one): everything;
- `member` (a member's HIS/LIS/PACS): reads, and writes of patient data (the Patient compartment's
  types, Patient and Task). Directory and definitional resources (Organization, Practitioner,
  Endpoint, SearchParameter, terminology, ...) are shared by every member and written by admin only,
  as are the consortium-record corrections (`$mpi-link`, `$mpi-split`) and `$reindex`;
- `reader` (e.g. a county radiologist's viewer): reads only (GET, `_search`, and the read-only
  operations `$everything`, `$match`, `$validate`); DICOMweb retrieval, not STOW;
- `auditor`: reads the audit trail (AuditEvent) and nothing else.
Only `admin` and `auditor` read AuditEvents freely; a `member` searches (GET) those of its own clients
and systems, its code forced into the query as `agent:identifier` (`own_events_only`), so paging and
totals stay right. Whatever the role, the trail is create-only
(`interactions/write.refuse_audit_change`: 405 for everyone).

This is the coarse, per-request part of member access. Which *persons* a member or reader client sees
(its member's registrations, care relationships, Consent) is decided inside the query, in the
interactions layer (`member_view.py`), given the `member_view` of the client.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

from fhir_server.api.responses import json_response
from fhir_server.api.scopes import SmartScope, permits
from fhir_server.errors import Issue
from fhir_server.interactions.member_view import MemberView
from fhir_server.model.access_record import MEMBER_SYSTEM, MEMBER_VIEW_SCOPE_KEY
from fhir_server.model.outcomes import operation_outcome
from fhir_server.search.compartments import compartment_params
from fhir_server.settings import Role

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ApiClient:
    """Who calls: the name its AuditEvents give it, its role, and the member it belongs to."""

    name: str
    role: Role = "admin"
    member: str | None = None
    scopes: tuple[SmartScope, ...] | None = None
    """SMART system scopes of a Backend Services token (`smart.py`); None for a static token (no bound)."""


API_CLIENT_SCOPE_KEY = "yilian.api_client"
"""The authenticated `ApiClient` in the ASGI scope (set by `auth.BearerTokenMiddleware`)."""
BREAK_GLASS_HEADER = b"x-break-glass"
BREAK_GLASS_SCOPE_KEY = "yilian.break_glass"
"""The reason a member or reader client gave to read beyond its care relationships (emergency, 急诊),
set by `AccessPolicyMiddleware` on a read that carries `X-Break-Glass: <reason>`; the access log
records it as the AuditEvent's purpose of use (ETREAT)."""
MAX_REASON = 500
READ_METHODS = frozenset({"GET", "HEAD"})
READ_ONLY_OPERATIONS = frozenset({"$everything", "$match", "$validate", "_search"})
ADMIN_OPERATIONS = frozenset({"$mpi-link", "$mpi-split", "$reindex"})
PATIENT_DATA = frozenset(compartment_params("Patient")) | {"Patient", "Task"}
"""Types a member writes: the records of persons (in R4's Patient compartment, and Task, which is not)."""


def _reading(method: str, parts: list[str]) -> bool:
    """Whether a request only reads: GET/HEAD, or POST of `_search` or a read-only operation."""
    return method in READ_METHODS or (method == "POST" and bool(parts) and parts[-1] in READ_ONLY_OPERATIONS)


def refusal(client: ApiClient, method: str, parts: list[str], *, dicomweb: bool = False) -> str | None:
    """Why `client` may not make this request (`parts`: the path below the FHIR base or `/dicomweb`),
    or None when it may: its role (`_role_refusal`), then its SMART scopes (`_scope_refusal`). A Bundle
    POSTed to the base is checked per entry (`bundle_refusal`)."""
    why = _role_refusal(client, method, parts, dicomweb=dicomweb)
    if why is None and client.scopes is not None:
        why = _scope_refusal(list(client.scopes), method, parts, dicomweb=dicomweb)
    return why


def _scope_refusal(scopes: list[SmartScope], method: str, parts: list[str], *, dicomweb: bool) -> str | None:
    """What a SMART token's scopes do not cover: the resource type and the permission (c r u d s)."""
    if dicomweb:
        kind, letter = "ImagingStudy", ("r" if method in READ_METHODS else "c")
    elif not parts or parts[0] == "metadata":
        return None  # the capability statement; a Bundle's entries are checked one by one
    else:
        operation = next((p for p in parts if p.startswith("$")), None)
        kind = parts[2] if len(parts) == 3 and not operation and parts[2] != "_history" else parts[0]
        if operation == "$validate":
            return None
        if operation == "$everything":
            kind, letter = "*", "r"  # every type of the patient's record
        elif operation == "$match" or parts[-1] == "_search":
            letter = "s"
        elif operation == "$merge":
            letter = "u"
        elif method in READ_METHODS:
            by_id = len(parts) >= 2 and not parts[1].startswith(("_", "$")) and len(parts) != 3
            letter = "r" if by_id or (len(parts) >= 3 and parts[2] == "_history") else "s"
        else:
            letter = {"POST": "c", "PUT": "u", "PATCH": "u", "DELETE": "d"}.get(method, "u")
    if permits(scopes, kind, letter):
        return None
    granted = " ".join(f"system/{k}.{''.join(sorted(v, key='cruds'.index))}" for k, v in scopes)
    what = "every type" if kind == "*" else kind
    return f"the token's scopes ({granted}) do not allow '{letter}' on {what}"


def _role_refusal(client: ApiClient, method: str, parts: list[str], *, dicomweb: bool = False) -> str | None:
    role = client.role
    if role == "admin":
        return None
    reading = _reading(method, parts)
    if dicomweb:
        if role == "auditor":
            return "auditor clients read the audit trail only"
        if role == "reader" and not reading:
            return "reader clients retrieve images; they do not store them"
        return None
    resource_type = parts[0] if parts else ""
    if resource_type == "metadata":
        return None
    if role == "auditor":
        return None if reading and resource_type == "AuditEvent" else "auditor clients read AuditEvents only"
    if resource_type == "AuditEvent" and reading:
        by_id = len(parts) == 2 and not parts[1].startswith(("_", "$"))  # not _history, _search, $op
        if role == "member" and method == "GET" and (parts == ["AuditEvent"] or by_id):
            return None  # its own clients' events: searched (`own_events_only`) or read (`hidden_event`)
        return "the audit trail is read by auditor and admin clients (a member reads its own events)"
    operation = next((p for p in parts if p.startswith("$")), None)
    if operation in ADMIN_OPERATIONS:
        return f"{operation} is a consortium operator's (admin client's) decision"
    if reading:
        return None
    if role == "reader":
        return "reader clients read; they do not write"
    if not parts:
        return None  # a batch or transaction: each entry is checked
    if resource_type not in PATIENT_DATA and resource_type != "AuditEvent":
        return f"{resource_type} is shared consortium data; only admin clients write it"
    return None


def bundle_refusal(client: ApiClient, bundle: Any, base_url: str) -> str | None:
    """`refusal` for each entry of a batch or transaction Bundle: the first one refused, named."""
    if client.role == "admin" or not isinstance(bundle, dict) or not isinstance(bundle.get("entry"), list):
        return None
    for i, entry in enumerate(bundle["entry"]):
        request = entry.get("request") if isinstance(entry, dict) else None
        if not isinstance(request, dict):
            continue  # malformed: the bundle processing names it
        method = str(request.get("method") or "").upper()
        url = str(request.get("url") or "")
        path = url.removeprefix(base_url).split("?", 1)[0].strip("/")
        parts = [p for p in path.split("/") if p]
        if not parts:
            continue
        why = refusal(client, method, parts)
        if why is not None:
            return f"Bundle.entry[{i}] ({method} {path}): {why}"
    return None


def own_events_only(client: ApiClient, method: str, parts: list[str]) -> str | None:
    """The criterion a member's AuditEvent search gets, added to its query: the events of its own
    clients and systems (`agent.who.identifier` is the member's code). None for any other request."""
    if client.role == "member" and client.member and method == "GET" and parts == ["AuditEvent"]:
        return urlencode({"agent:identifier": f"{MEMBER_SYSTEM}|{client.member}"})
    return None


def stamp_registration(client: Any, body: Any) -> None:
    """A member client's Patient that names no `managingOrganization` is registered by its member: the
    hub fills in a logical reference to the member (`identifier urn:yilian:member|<code>`), so the record
    the member wrote is one it sees (`care_team.py`: the registering member). A bundle is stamped per
    entry."""
    if not (isinstance(client, ApiClient) and client.role == "member" and client.member):
        return
    resources = [body]
    if isinstance(body, dict) and body.get("resourceType") == "Bundle":
        resources = [e.get("resource") for e in body.get("entry") or () if isinstance(e, dict)]
    for resource in resources:
        if (
            isinstance(resource, dict)
            and resource.get("resourceType") == "Patient"
            and "managingOrganization" not in resource
        ):
            resource["managingOrganization"] = {
                "identifier": {"system": MEMBER_SYSTEM, "value": client.member}
            }


def member_view(scope: Any) -> MemberView | None:
    """The view of patient data the request's client has: a member's or reader's, its member's persons
    only (`interactions/member_view.py`); None (everything) for admin and auditor clients, without tokens,
    and for a break-glass read."""
    client = scope.get(API_CLIENT_SCOPE_KEY)
    if (
        isinstance(client, ApiClient)
        and client.role in ("member", "reader")
        and client.member
        and not scope.get(BREAK_GLASS_SCOPE_KEY)
    ):
        return MemberView(client.member)
    return None


def break_glass(
    client: ApiClient, method: str, parts: list[str], headers: list[tuple[bytes, bytes]]
) -> str | None:
    """The break-glass reason of a request, or None without the header. Raises `ValueError` (its text is
    the client's answer) when the header is empty, too long, or not on a read by a member or reader."""
    raw = next((v for k, v in headers if k.lower() == BREAK_GLASS_HEADER), None)
    if raw is None:
        return None
    reason = unquote(raw.decode("utf-8", "replace")).strip()  # percent-encoded UTF-8 (HTTP headers are ASCII)
    if not reason or len(reason) > MAX_REASON:
        raise ValueError(f"X-Break-Glass needs the emergency's reason (1 to {MAX_REASON} characters)")
    if client.role not in ("member", "reader") or not _reading(method, parts):
        raise ValueError(
            "X-Break-Glass lets a member or reader client read beyond its care relationships; "
            f"it does not apply to a {method} by a {client.role} client"
        )
    return reason


def hidden_event(client: ApiClient | None, event: Any) -> bool:
    """Whether AuditEvent `event`, read by id, is not `client`'s to see: a member sees the events of its
    own clients and systems only (another's answers as absent, 404, as the search leaves it out)."""
    if client is None or client.role != "member":
        return False
    agents = event.get("agent") if isinstance(event, dict) else None
    return not any(
        isinstance(agent, dict)
        and ((agent.get("who") or {}).get("identifier") or {})
        == {"system": MEMBER_SYSTEM, "value": client.member}
        for agent in agents or []
    )


class AccessPolicyMiddleware:
    """403 (with an OperationOutcome saying why) for a request the client's role does not allow.

    Runs inside the access log, so a refused request is audited under the client's name like any
    other; without tokens configured there is no client in the scope and nothing is checked."""

    def __init__(self, app: ASGIApp, *, fhir_base: str, dicomweb_base: str) -> None:
        self.app = app
        self.fhir_base = fhir_base
        self.dicomweb_base = dicomweb_base

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get(API_CLIENT_SCOPE_KEY) if scope["type"] == "http" else None
        if isinstance(client, ApiClient):
            path: str = scope.get("path", "")
            dicomweb = path.startswith(self.dicomweb_base)
            below = path[len(self.dicomweb_base if dicomweb else self.fhir_base) :]
            parts = [p for p in below.split("/") if p]
            method = scope.get("method", "GET")
            why = refusal(client, method, parts, dicomweb=dicomweb)
            if why is None and not dicomweb:
                try:
                    reason = break_glass(client, method, parts, scope.get("headers") or [])
                except ValueError as exc:
                    response = json_response(operation_outcome([Issue("error", "invalid", str(exc))]), 400)
                    await response(scope, receive, send)
                    return
                if reason is not None:
                    scope[BREAK_GLASS_SCOPE_KEY] = reason  # the access log reads it from this scope
                    log.warning(
                        "break-glass read by %s (member %s): %s %s", client.name, client.member, method, path
                    )
            view = member_view(scope)
            if view is not None:
                scope[MEMBER_VIEW_SCOPE_KEY] = view.member  # for the DICOMweb routes (model-level key)
            extra = None if dicomweb else own_events_only(client, method, parts)
            if extra is not None:
                query = scope.get("query_string", b"").decode("latin-1")
                scope = {**scope, "query_string": f"{query}&{extra}".lstrip("&").encode("latin-1")}
            if why is not None:
                message = f"{client.name} ({client.role}): {why}"
                response = json_response(operation_outcome([Issue("error", "forbidden", message)]), 403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
