"""MLLP over TLS (as IHE ATNA asks of secure nodes): the SSL contexts of the listener and of clients.

Members reach the hub across the consortium network, and HL7 v2 carries names, resident ID numbers
and results in clear text, so a listener on a member-facing address should run TLS. With
`mllp_tls_ca` set as well, the listener asks every sender for a certificate issued by that
(consortium) CA (mutual TLS) and journals the sender's certificate name with each message. Outbound
deliveries to an `mllps://` Endpoint verify the member's certificate against the same CA and present
the hub's own certificate.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from adapters.base import AdapterError
from fhir_server.settings import Settings

HANDSHAKE_TIMEOUT_S = 10.0


class TlsConfigError(AdapterError):
    """The configured certificate, key or CA cannot be loaded: the listener does not start."""


def server_context(settings: Settings) -> ssl.SSLContext | None:
    """The listener's context, or None when `mllp_tls_cert` is not set (plain MLLP)."""
    if settings.mllp_tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.mllp_tls_cert, settings.mllp_tls_key)
        if settings.mllp_tls_ca is not None:
            context.load_verify_locations(cafile=settings.mllp_tls_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise TlsConfigError(
            f"MLLP TLS: cannot load certificate {settings.mllp_tls_cert} / key {settings.mllp_tls_key}"
            f" / CA {settings.mllp_tls_ca}: {exc}"
        ) from exc
    return context


def client_context(
    ca: Path | None = None, cert: Path | None = None, key: Path | None = None
) -> ssl.SSLContext:
    """A client context that verifies the peer (against `ca`, else the system CAs) and its host name,
    presenting `cert`/`key` when given (for a listener that requires client certificates)."""
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def hub_client_context(settings: Settings) -> ssl.SSLContext:
    """The hub as a client of member endpoints: the consortium CA, and the hub's own certificate."""
    return client_context(settings.mllp_tls_ca, settings.mllp_tls_cert, settings.mllp_tls_key)


def peer_name(certificate: dict[str, object] | None) -> str | None:
    """The common name of a verified peer certificate (`SSLObject.getpeercert()`), if any."""
    for rdn in (certificate or {}).get("subject", ()):  # type: ignore[attr-defined]
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def handshake_failure(exc: BaseException) -> str:
    """A refused handshake in words an operator can act on."""
    if isinstance(exc, TimeoutError):
        return f"no TLS handshake within {HANDSHAKE_TIMEOUT_S:.0f} s"
    reason = getattr(exc, "reason", None)
    if reason == "WRONG_VERSION_NUMBER" or reason == "HTTP_REQUEST":
        return "the peer did not speak TLS (clear-text MLLP to the TLS port?)"
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE":
        return "the peer presented no client certificate (the consortium CA's is required)"
    verify = getattr(exc, "verify_message", None)
    if verify:
        return f"its certificate was not accepted: {verify}"
    return str(exc) or type(exc).__name__
