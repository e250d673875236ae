"""A lingering close: after the gateway's close frame, read and discard until the client's
close frame, within a byte budget and a deadline; and the frame reader, skipping once the
gateway has closed, that sees that close frame arrive whole. (Fake clock, no sockets.)"""

from __future__ import annotations

import struct

import pytest

from sidecar.core import ws_frames
from sidecar.core.lingering_close import (
    LINGER_MAX_BYTES,
    LINGER_TIMEOUT_S,
    LingeringClose,
    LingerVerdict,
)
from sidecar.core.ws_reader import FrameReader


def _client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    size = len(payload)
    first = (0x80 if fin else 0) | opcode
    if size < 126:
        header = bytes((first, 0x80 | size))
    elif size < 65536:
        header = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, size)
    return header + b"\x01\x02\x03\x04" + payload  # (the masking does not matter here)


def _close(code: int = 1000) -> bytes:
    return _client_frame(ws_frames.OP_CLOSE, struct.pack("!H", code) + b"bye")


def test_reading_on_until_the_close_frame() -> None:
    linger = LingeringClose(started=10.0)
    assert linger.received(4096, False, 10.5) is LingerVerdict.READ_ON
    assert linger.received(10, True, 10.6) is LingerVerdict.CLOSE


def test_the_deadline_closes_whatever_came() -> None:
    linger = LingeringClose(started=10.0, timeout_s=2.0)
    assert linger.deadline == 12.0
    assert linger.received(1, False, 11.999) is LingerVerdict.READ_ON
    assert linger.received(1, False, 12.0) is LingerVerdict.CLOSE


def test_the_byte_budget_closes_a_client_that_never_stops() -> None:
    linger = LingeringClose(started=0.0, max_bytes=1000)
    assert linger.received(1000, False, 0.1) is LingerVerdict.READ_ON
    assert linger.received(1, False, 0.1) is LingerVerdict.CLOSE
    assert linger.discarded == 1001


def test_the_defaults_wait_out_the_rest_of_autobahns_largest_message() -> None:
    linger = LingeringClose(started=0.0)
    assert linger.timeout_s == LINGER_TIMEOUT_S
    assert linger.received(16 * 2**20, False, 1.0) is LingerVerdict.READ_ON
    assert LINGER_MAX_BYTES >= 16 * 2**20


@pytest.mark.parametrize("bad", [{"timeout_s": 0.0}, {"max_bytes": -1}])
def test_nonsense_bounds_are_refused(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LingeringClose(started=0.0, **bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 100, 1 << 20])
def test_the_walker_sees_the_close_frame_only_once_it_came_whole(chunk: int) -> None:
    before = b"".join(
        (
            _client_frame(ws_frames.OP_TEXT, b"a" * 70_000, fin=False),
            _client_frame(ws_frames.OP_PING, b"p"),  # a control frame between fragments
            _client_frame(0x0, b"b" * 300),
            _client_frame(ws_frames.OP_PONG, b""),
        )
    )
    close = _close()
    check = _skipping()
    for i in range(0, len(before), chunk):
        check.feed(before[i : i + chunk])
        assert not check.close_received
    for i in range(0, len(close), chunk):
        assert not check.close_received
        check.feed(close[i : i + chunk])
    assert check.close_received


def test_an_empty_close_frame_is_whole_at_its_header() -> None:
    check = _skipping()
    check.feed(_client_frame(ws_frames.OP_CLOSE, b""))
    assert check.close_received


def test_close_bytes_inside_a_payload_are_not_a_close_frame() -> None:
    check = _skipping()
    check.feed(_client_frame(ws_frames.OP_BINARY, _close() * 10))
    assert not check.close_received


def _skipping() -> FrameReader:
    """A reader once the gateway has closed: it skips frames, even ones over the limit."""
    reader = FrameReader(max_message_bytes=100)
    reader.discard()
    return reader
