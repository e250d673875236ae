"""Server frames written straight to the socket: the RFC 6455 header for every length."""

from __future__ import annotations

import struct

import pytest

from sidecar.core import ws_frames


def _parse(frame: bytes) -> tuple[bool, int, bool, bytes]:
    """(fin, opcode, masked, payload) of one frame, read as RFC 6455 section 5.2 says."""
    first, second = frame[0], frame[1]
    size, offset = second & 0x7F, 2
    if size == 126:
        (size,) = struct.unpack_from("!H", frame, 2)
        offset = 4
    elif size == 127:
        (size,) = struct.unpack_from("!Q", frame, 2)
        offset = 10
    payload = frame[offset:]
    assert len(payload) == size
    return bool(first & 0x80), first & 0x0F, bool(second & 0x80), payload


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 200_000])
def test_every_payload_length_gets_the_shortest_header_that_holds_it(size: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    frame = ws_frames.server_frame(ws_frames.OP_BINARY, payload)
    assert _parse(frame) == (True, ws_frames.OP_BINARY, False, payload)
    header = len(frame) - size
    assert header == (2 if size < 126 else 4 if size < 65536 else 10)


def test_the_ping_is_an_empty_final_unmasked_ping() -> None:
    assert _parse(ws_frames.PING) == (True, ws_frames.OP_PING, False, b"")
    assert ws_frames.PING == b"\x89\x00"


def test_a_close_frame_carries_its_code_then_its_reason() -> None:
    assert _parse(ws_frames.close_frame(1012, "drain")) == (
        True,
        ws_frames.OP_CLOSE,
        False,
        b"\x03\xf4drain",
    )
    assert _parse(ws_frames.CLOSE_EMPTY) == (True, ws_frames.OP_CLOSE, False, b"")
