"""Bearer-token access control for the HTTP edge (FHIR and DICOMweb).

The hub holds patient data, so nothing is open by default on a network: `yilian serve` refuses a
non-loopback bind without tokens (see `serve.check_exposure`). With `YILIAN_API_TOKENS` set (token →
client: a name, meaning an admin client, or `{"client", "member", "role"}`), every request except the
CapabilityStatement and the SMART discovery and token endpoints (read before a client authenticates)
needs `Authorization: Bearer <token>`, a static token or an access token from the SMART Backend Services
token endpoint (`smart.py`); the client name then identifies the agent in AuditEvents, and its role
bounds what it may ask (`access.py`: 403 with an OperationOutcome saying why). Static tokens are
compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from fhir_server.api.access import API_CLIENT_SCOPE_KEY, ApiClient
from fhir_server.api.responses import json_response
from fhir_server.api.smart import TokenIssuer
from fhir_server.errors import Issue
from fhir_server.model.outcomes import operation_outcome
from fhir_server.settings import ApiClientEntry

CLIENT_SCOPE_KEY = "yilian.client"
"""The client's name in the ASGI scope (the agent of its AuditEvents, Provenance performer)."""


def registered_clients(tokens: Mapping[str, str | ApiClientEntry]) -> dict[str, ApiClient]:
    """Token → client, from `Settings.api_tokens` (a bare name is an admin client, as it always was)."""
    return {
        token: ApiClient(entry)
        if isinstance(entry, str)
        else ApiClient(entry.client, entry.role, entry.member)
        for token, entry in tokens.items()
    }


def client_for(header: str | None, clients: Mapping[str, ApiClient]) -> ApiClient | None:
    """The client for an `Authorization` header value, or None when it is not a known token."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    token = token.strip()
    found = None
    for known, client in clients.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            found = client
    return found


class BearerTokenMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: Mapping[str, str | ApiClientEntry],
        protected: tuple[str, ...],
        public: tuple[str, ...],
        issuer: TokenIssuer | None = None,
    ):
        self.app = app
        self.clients = registered_clients(tokens)
        self.protected = protected
        self.public = public
        self.issuer = issuer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(self.protected) or path in self.public:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        raw = headers.get(b"authorization")
        header = raw.decode("latin-1") if raw else None
        client = client_for(header, self.clients)
        if client is None and self.issuer is not None and header and header[:7].lower() == "bearer ":
            client = self.issuer.client_for(header[7:].strip())  # a SMART Backend Services token
        if client is None:
            reason = "missing" if raw is None else "not valid"
            response = json_response(
                operation_outcome(
                    [Issue("error", "login", f"Bearer token {reason}; this hub needs Authorization")]
                ),
                401,
                headers={"WWW-Authenticate": 'Bearer realm="yilian"'},
            )
            await response(scope, receive, send)
            return
        scope[CLIENT_SCOPE_KEY] = client.name
        scope[API_CLIENT_SCOPE_KEY] = client
        await self.app(scope, receive, send)
