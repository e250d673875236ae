"""Protobuf wire encoding of xDS responses from already-serialized resources.

Resources are serialized once per version (:mod:`xds_server.snapshot`); the
response envelopes around them are a few length-delimited fields, written
here directly so that a push to N Envoys copies bytes instead of
re-serializing N object trees (docs/envoy-behaviours.md, 4).
"""

from __future__ import annotations

from collections.abc import Iterable

_LEN = 2  # wire type: length-delimited


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _LEN) + _varint(len(payload)) + payload


def _string(number: int, text: str) -> bytes:
    return _field(number, text.encode()) if text else b""


def string_field(number: int, text: str) -> bytes:
    """A string field (omitted when empty, as protobuf does)."""
    return _string(number, text)


def message_field(number: int, payload: bytes) -> bytes:
    """An embedded message (or bytes) field."""
    return _field(number, payload)


def any_message(type_url: str, value: bytes) -> bytes:
    """``google.protobuf.Any{type_url=1, value=2}``."""
    return _string(1, type_url) + _field(2, value)


def discovery_response(
    version_info: str, type_url: str, nonce: str, resources: Iterable[bytes]
) -> bytes:
    """``DiscoveryResponse{version_info=1, resources=2 (Any), type_url=4, nonce=5}``."""
    body = bytearray(_string(1, version_info))
    for resource in resources:
        body += _field(2, any_message(type_url, resource))
    body += _string(4, type_url)
    body += _string(5, nonce)
    return bytes(body)


def delta_discovery_response(
    system_version_info: str,
    type_url: str,
    nonce: str,
    resources: Iterable[tuple[str, str, bytes]],
    removed: Iterable[str] = (),
) -> bytes:
    """``DeltaDiscoveryResponse{system_version_info=1, resources=2, type_url=4, nonce=5,
    removed_resources=6}``; each resource is ``(name, version, body)`` and becomes
    ``Resource{version=1, resource=2 (Any), name=3}``."""
    body = bytearray(_string(1, system_version_info))
    for name, version, value in resources:
        resource = _string(1, version) + _field(2, any_message(type_url, value)) + _string(3, name)
        body += _field(2, resource)
    body += _string(4, type_url)
    body += _string(5, nonce)
    for name in removed:
        body += _string(6, name)
    return bytes(body)
