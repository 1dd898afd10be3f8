"""SMART Backend Services: a member system registered with its JWKS trades a signed client assertion for a
short-lived access token, whose scopes bound what it may read or write (and its role and care
relationships still apply)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from fhir_server.hub import Hub
from tests.api.conftest import client_hub

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP384R1())
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ADMIN = {"Authorization": "Bearer t-admin"}
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.algorithms.RSAAlgorithm if alg.startswith("RS") else jwt.algorithms.ECAlgorithm
    return {**json.loads(algorithm.to_jwk(key.public_key())), "kid": kid, "alg": alg}


CLIENTS = {
    "county-lis": {
        "client": "county-lis",
        "member": "XYRMYY",
        "role": "member",
        "jwks": {"keys": [jwk(RSA_KEY, "lis-1", "RS384")]},
        "scope": "system/Observation.read system/Patient.rs",
    },
    "ops-backend": {
        "client": "ops-backend",
        "role": "admin",
        "jwks": {"keys": [jwk(EC_KEY, "ops-1", "ES384")]},
        "scope": "system/*.cruds",
    },
}


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    async with client_hub(tmp_path, api_tokens={"t-admin": "ops"}, smart_clients=CLIENTS) as opened:
        yield opened


def assertion(client_id: str, key: Any, kid: str, alg: str, aud: str, **more: Any) -> str:
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": aud,
        "exp": int(time.time()) + 120,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode({**claims, **more}, key, algorithm=alg, headers={"kid": kid})


async def token_request(http: httpx.AsyncClient, signed: str, scope: str) -> httpx.Response:
    form = {
        "grant_type": "client_credentials",
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": signed,
        "scope": scope,
    }
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    return await http.post("/fhir/auth/token", content=urlencode(form), headers=headers)


async def test_a_jwks_registered_client_gets_a_token_whose_scopes_bound_it(http: httpx.AsyncClient) -> None:
    security = (await http.get("/fhir/metadata")).json()["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert security["extension"][0]["extension"][0]["valueUri"] == "http://t/fhir/auth/token"
    config = (await http.get("/fhir/.well-known/smart-configuration")).json()
    endpoint = config["token_endpoint"]
    assert (
        endpoint == "http://t/fhir/auth/token"
        and "private_key_jwt" in config["token_endpoint_auth_methods_supported"]
    )
    assert {"RS384", "ES384"} <= set(config["token_endpoint_auth_signing_alg_values_supported"])

    signed = assertion("county-lis", RSA_KEY, "lis-1", "RS384", endpoint)
    r = await token_request(http, signed, "system/Observation.read launch/patient")
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["token_type"] == "bearer" and answer["scope"] == "system/Observation.read"
    assert 0 < answer["expires_in"] <= 300 and r.headers["cache-control"] == "no-store"
    bearer = {"Authorization": f"Bearer {answer['access_token']}"}

    assert (await http.get("/fhir/Observation?code=718-7", headers=bearer)).status_code == 200
    pid = (await http.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=ADMIN)).json()["id"]
    r = await http.get(f"/fhir/Patient/{pid}", headers=bearer)
    assert r.status_code == 403 and "do not allow 'r' on Patient" in r.json()["issue"][0]["diagnostics"], (
        r.text
    )
    r = await http.get("/fhir/Patient?name=王", headers=bearer)
    assert r.status_code == 403 and "do not allow 's' on Patient" in r.json()["issue"][0]["diagnostics"], (
        r.text
    )
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "Hb"}}
    assert (await http.post("/fhir/Observation", json=obs, headers=bearer)).status_code == 403

    # The same assertion cannot be used twice; a tampered token is no token.
    r = await token_request(http, signed, "system/Observation.read")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client" and "already used" in r.text
    tampered = {"Authorization": f"Bearer {answer['access_token'][:-3]}abc"}
    assert (await http.get("/fhir/Observation", headers=tampered)).status_code == 401


async def test_assertions_that_do_not_prove_the_client_are_refused(http: httpx.AsyncClient) -> None:
    endpoint = "http://t/fhir/auth/token"
    cases = [
        (assertion("county-lis", OTHER_KEY, "lis-1", "RS384", endpoint), 401, "invalid_client"),
        (assertion("county-lis", RSA_KEY, "lis-1", "RS384", "http://elsewhere/token"), 401, "invalid_client"),
        (
            assertion("county-lis", RSA_KEY, "lis-1", "RS384", endpoint, exp=int(time.time()) - 5),
            401,
            "invalid_client",
        ),
        (
            assertion("county-lis", RSA_KEY, "lis-1", "RS384", endpoint, exp=int(time.time()) + 3600),
            401,
            "invalid_client",
        ),
        (assertion("stranger", RSA_KEY, "lis-1", "RS384", endpoint), 401, "invalid_client"),
        (jwt.encode({"iss": "county-lis"}, "s" * 32, algorithm="HS256"), 401, "invalid_client"),
    ]
    for signed, status, error in cases:
        r = await token_request(http, signed, "system/Observation.read")
        assert (r.status_code, r.json()["error"]) == (status, error), r.text
    signed = assertion("county-lis", RSA_KEY, "lis-1", "RS384", endpoint)
    r = await token_request(http, signed, "system/Patient.write")
    assert r.status_code == 400 and r.json()["error"] == "invalid_scope"


async def test_an_es384_client_with_v2_scopes_writes_and_reads(http: httpx.AsyncClient) -> None:
    endpoint = "http://t/fhir/auth/token"
    signed = assertion("ops-backend", EC_KEY, "ops-1", "ES384", endpoint)
    r = await token_request(http, signed, "system/Patient.cruds system/Observation.rs")
    assert r.status_code == 200 and r.json()["scope"] == "system/Patient.cruds system/Observation.rs", r.text
    bearer = {"Authorization": f"Bearer {r.json()['access_token']}"}
    r = await http.post("/fhir/Patient", json={"resourceType": "Patient"}, headers=bearer)
    assert r.status_code == 201, r.text
    assert (await http.get(f"/fhir/Patient/{r.json()['id']}", headers=bearer)).status_code == 200
    obs = {"resourceType": "Observation", "status": "final", "code": {"text": "Hb"}}
    r = await http.post("/fhir/Observation", json=obs, headers=bearer)
    assert r.status_code == 403 and "'c' on Observation" in r.json()["issue"][0]["diagnostics"]
