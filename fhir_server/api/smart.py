"""SMART Backend Services (system-to-system FHIR): discovery, and a token endpoint for `client_credentials`
with a `private_key_jwt` client assertion.

A member's system registered in `YILIAN_SMART_CLIENTS` (client_id → name, member, role, JWKS, allowed
scopes) signs a short JWT (RS384 or ES384; `iss` = `sub` = its client_id, `aud` = this token endpoint,
`exp` at most 5 minutes ahead, a `jti` never used before) and trades it for an access token: a JWT the
hub signs (HS256, with a key made when the process starts), valid `smart_token_seconds`, carrying the
scopes granted (those asked for that its registration allows). The bearer middleware accepts it like a
static token; the client's role and care relationships still apply, and its scopes bound the types it
may read or write (`access.refusal`). Signatures and claims are checked by PyJWT (with `cryptography`):
no hand-rolled crypto. Errors follow RFC 6749 §5.2 (`invalid_client` 401, others 400).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

import jwt
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fhir_server.api.access import ApiClient
from fhir_server.api.context import base_url, state_of
from fhir_server.api.routing import RouteTable
from fhir_server.api.scopes import covered, parse_scope, parse_scopes
from fhir_server.settings import SmartClientEntry

JsonObject = dict[str, Any]
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ["RS384", "ES384"]
MAX_ASSERTION_LIFETIME = 300
TOKEN_PATH = "/auth/token"
WELL_KNOWN_PATH = "/.well-known/smart-configuration"


class TokenError(Exception):
    """An RFC 6749 error answer: `error` code, description, HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.status = status


class TokenIssuer:
    """Checks client assertions, issues access tokens, and reads them back for the bearer middleware."""

    def __init__(self, clients: Mapping[str, SmartClientEntry], lifetime: int) -> None:
        self.clients = dict(clients)
        self.lifetime = lifetime
        self._key = secrets.token_bytes(32)
        self._used: dict[str, float] = {}  # assertion jti → its exp (replays refused until then)

    def issue(self, form: Mapping[str, str], token_url: str) -> dict[str, Any]:
        if form.get("grant_type") != "client_credentials":
            raise TokenError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE or not form.get("client_assertion"):
            raise TokenError("invalid_request", f"a client_assertion of type {ASSERTION_TYPE} is required")
        client_id, entry = self._verified(form["client_assertion"], token_url)
        allowed = [scope for _, scope in parse_scopes(entry.scope)]
        asked = parse_scopes(form.get("scope", ""))
        granted = [text for text, scope in asked if covered(scope, allowed)]
        if not granted:
            raise TokenError("invalid_scope", f"none of the scopes asked for is allowed to {client_id}")
        now = int(time.time())
        claims = {
            "iss": token_url,
            "sub": client_id,
            "scope": " ".join(granted),
            "iat": now,
            "exp": now + self.lifetime,
            "jti": secrets.token_hex(16),
        }
        token = jwt.encode(claims, self._key, algorithm="HS256")
        return {
            "access_token": token,
            "token_type": "bearer",
            "expires_in": self.lifetime,
            "scope": claims["scope"],
        }

    def _verified(self, assertion: str, token_url: str) -> tuple[str, SmartClientEntry]:
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError as exc:
            raise TokenError("invalid_client", f"client_assertion is not a JWT: {exc}", 401) from exc
        client_id = unverified.get("iss")
        entry = self.clients.get(client_id) if isinstance(client_id, str) else None
        if entry is None or not isinstance(client_id, str):
            raise TokenError("invalid_client", f"client {client_id!r} is not registered", 401)
        if header.get("alg") not in ALGORITHMS:
            raise TokenError(
                "invalid_client", f"client_assertion must be signed with {' or '.join(ALGORITHMS)}", 401
            )
        key = _key_for(entry, header.get("kid"))
        try:
            claims = jwt.decode(
                assertion,
                key,
                algorithms=ALGORITHMS,
                audience=token_url,
                issuer=client_id,
                options={"require": ["iss", "sub", "aud", "exp", "jti"]},
            )
        except jwt.PyJWTError as exc:
            raise TokenError("invalid_client", f"client_assertion rejected: {exc}", 401) from exc
        if claims["sub"] != client_id:
            raise TokenError("invalid_client", "client_assertion sub must equal iss (the client_id)", 401)
        now = time.time()
        if claims["exp"] > now + MAX_ASSERTION_LIFETIME:
            raise TokenError("invalid_client", "client_assertion exp is more than 5 minutes ahead", 401)
        self._used = {jti: exp for jti, exp in self._used.items() if exp > now}
        if claims["jti"] in self._used:
            raise TokenError("invalid_client", "client_assertion jti was already used", 401)
        self._used[claims["jti"]] = float(claims["exp"])
        return client_id, entry

    def client_for(self, token: str) -> ApiClient | None:
        """The client an access token this issuer made names, or None (not ours, expired, tampered)."""
        try:
            claims = jwt.decode(token, self._key, algorithms=["HS256"], options={"require": ["exp", "sub"]})
        except jwt.PyJWTError:
            return None
        entry = self.clients.get(claims["sub"])
        if entry is None:
            return None
        scopes = tuple(scope for word in str(claims.get("scope", "")).split() if (scope := parse_scope(word)))
        return ApiClient(entry.client, entry.role, entry.member, scopes)


def capability_security(base: str, *, smart: bool) -> JsonObject:
    """`CapabilityStatement.rest.security` for a hub that needs bearer tokens (and offers SMART)."""
    security: JsonObject = {
        "cors": False,
        "description": "Bearer tokens: static per-client tokens"
        + (
            ", or SMART Backend Services access tokens (client_credentials, private_key_jwt)" if smart else ""
        ),
    }
    if smart:
        security["service"] = [
            {
                "coding": [
                    {
                        "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                        "code": "SMART-on-FHIR",
                    }
                ]
            }
        ]
        security["extension"] = [
            {
                "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "token", "valueUri": base + TOKEN_PATH}],
            }
        ]
    return security


def _key_for(entry: SmartClientEntry, kid: Any) -> Any:
    keys = [k for k in entry.jwks.get("keys", []) if isinstance(k, dict)]
    chosen = [k for k in keys if kid is None or k.get("kid") == kid]
    if not chosen:
        raise TokenError("invalid_client", f"no key with kid {kid!r} in the client's registered JWKS", 401)
    try:
        return jwt.PyJWK(chosen[0]).key
    except jwt.PyJWTError as exc:
        raise TokenError("invalid_client", f"the client's registered key is not usable: {exc}", 401) from exc


def build_smart_router(issuer: TokenIssuer) -> RouteTable:
    router = RouteTable()

    @router.get(WELL_KNOWN_PATH)
    async def configuration(request: Request) -> Response:
        return JSONResponse(
            {
                "token_endpoint": base_url(request) + TOKEN_PATH,
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": ALGORITHMS,
                "scopes_supported": ["system/*.read", "system/*.rs", "system/*.cruds"],
                "capabilities": ["client-confidential-asymmetric", "permission-v1", "permission-v2"],
            }
        )

    @router.post(TOKEN_PATH)
    async def token(request: Request) -> Response:
        raw = await request.body()
        if len(raw) > state_of(request).settings.max_body_bytes:
            return JSONResponse({"error": "invalid_request", "error_description": "body too large"}, 400)
        form = dict(parse_qsl(raw.decode("utf-8", "replace")))
        try:
            answer = issuer.issue(form, base_url(request) + TOKEN_PATH)
        except TokenError as exc:
            return JSONResponse({"error": exc.error, "error_description": str(exc)}, exc.status)
        return JSONResponse(answer, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    return router
