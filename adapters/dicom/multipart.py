"""multipart/related (RFC 2387) for DICOMweb, pure: split a STOW-RS body, build a WADO-RS response."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from adapters.base import AdapterError


class MultipartError(AdapterError):
    """The body is not a well-formed multipart/related message."""


def content_type_params(header: str) -> tuple[str, dict[str, str]]:
    """('multipart/related', {'type': 'application/dicom', 'boundary': ...}) from a Content-Type value."""
    media, *rest = header.split(";")
    params: dict[str, str] = {}
    for item in rest:
        key, _, value = item.strip().partition("=")
        if key:
            params[key.strip().lower()] = value.strip().strip('"')
    return media.strip().lower(), params


def split(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart body: (lower-cased headers, payload)."""
    if not boundary:
        raise MultipartError("multipart body without boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    pieces = body.split(delimiter)
    if len(pieces) < 3:
        raise MultipartError("no parts in multipart body")
    parts: list[tuple[dict[str, str], bytes]] = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break  # close delimiter
        piece = piece.removeprefix(b"\r\n")
        head, sep, payload = piece.partition(b"\r\n\r\n")
        if not sep:
            raise MultipartError("part without header/body separator")
        headers: dict[str, str] = {}
        for line in head.split(b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            if name:
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, payload.removesuffix(b"\r\n")))
    else:
        raise MultipartError("multipart body not closed")
    return parts


def build(parts: Iterable[bytes], part_type: str) -> tuple[bytes, str]:
    """(body, Content-Type header) of a multipart/related response whose parts all have `part_type`."""
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for payload in parts:
        chunks.append(f"--{boundary}\r\nContent-Type: {part_type}\r\n\r\n".encode("latin-1"))
        chunks.append(payload)
        chunks.append(b"\r\n")
    chunks.append(f"--{boundary}--\r\n".encode("latin-1"))
    header = f'multipart/related; type="{part_type.split(";")[0]}"; boundary={boundary}'
    return b"".join(chunks), header
