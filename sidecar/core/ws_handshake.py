"""The opening handshake of RFC 6455 section 4.2: whether a request is an upgrade the
gateway can take, and the 101 that accepts it (written by the gateway itself, with the
first frames that follow it)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
VERSION = "13"


class NotAnUpgrade(Exception):
    """A request the gateway answers with an HTTP status instead of a 101."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def _tokens(value: str) -> list[str]:
    return [token.strip().lower() for token in value.split(",")]


def accept_key(headers: Mapping[str, str], http_version: tuple[int, int]) -> str:
    """The ``Sec-WebSocket-Accept`` of an upgrade request; raises :class:`NotAnUpgrade`
    with the status and reason when it is not one this server takes."""
    if "websocket" not in _tokens(headers.get("Upgrade", "")):
        raise NotAnUpgrade(400, "not_websocket", "this endpoint takes WebSocket upgrades only")
    if http_version < (1, 1):
        raise NotAnUpgrade(400, "http_version", "a WebSocket upgrade needs HTTP/1.1")
    if "upgrade" not in _tokens(headers.get("Connection", "")):
        raise NotAnUpgrade(400, "not_websocket", "an upgrade needs Connection: Upgrade")
    if headers.get("Sec-WebSocket-Version", "").strip() != VERSION:
        raise NotAnUpgrade(426, "websocket_version", "this server speaks WebSocket version 13")
    key = headers.get("Sec-WebSocket-Key", "").strip()
    try:
        nonce = base64.b64decode(key, validate=True)
    except binascii.Error:
        nonce = b""
    if len(nonce) != 16:
        raise NotAnUpgrade(400, "bad_key", "Sec-WebSocket-Key is not a base64 16-byte nonce")
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def switching_protocols(accept: str, headers: Mapping[str, str]) -> bytes:
    """The 101 answer, whole (its headers are plain ASCII the gateway chose)."""
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept}",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
