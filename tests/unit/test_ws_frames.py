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


def _client_frame(payload: bytes, masked: bool = True, opcode: int = ws_frames.OP_TEXT) -> bytes:
    size = len(payload)
    if size < 126:
        header = bytes((0x80 | opcode, size | (0x80 if masked else 0)))
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 126 | (0x80 if masked else 0), size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127 | (0x80 if masked else 0), size)
    key = b"\x01\x02\x03\x04" if masked else b""
    return header + key + payload  # (the payload's masking does not matter to the check)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 100_000])
def test_masked_frames_pass_whatever_the_chunking(chunk: int) -> None:
    stream = b"".join(_client_frame(b"x" * n) for n in (0, 5, 125, 126, 300, 65_535, 70_000))
    check = ws_frames.MaskCheck()
    assert all(check.feed(stream[i : i + chunk]) for i in range(0, len(stream), chunk))


@pytest.mark.parametrize("chunk", [1, 5, 1000])
def test_an_unmasked_frame_is_seen_wherever_it_falls_and_the_check_stays_failed(
    chunk: int,
) -> None:
    stream = _client_frame(b"ok" * 100) + _client_frame(b"bad", masked=False) + b"more"
    check = ws_frames.MaskCheck()
    results = [check.feed(stream[i : i + chunk]) for i in range(0, len(stream), chunk)]
    assert False in results and results[-1] is False
    assert check.feed(_client_frame(b"later")) is False
