"""The gateway's own frame reader (RFC 6455 section 5): every message whatever the
chunking, every rule a server enforces with the code it closes with, each as early as
the bytes allow; permessage-deflate; the skipping after the gateway's close."""

from __future__ import annotations

import random
import struct
import zlib

import pytest

from sidecar.core import ws_frames
from sidecar.core.ws_deflate import Deflate, DeflateTerms
from sidecar.core.ws_reader import FAILED, FrameReader, close_payload, unmask

TEXT, BINARY, CLOSE = ws_frames.OP_TEXT, ws_frames.OP_BINARY, ws_frames.OP_CLOSE
PING, PONG = ws_frames.OP_PING, ws_frames.OP_PONG
LIMIT = 100_000


def frame(
    opcode: int,
    payload: bytes,
    fin: bool = True,
    masked: bool = True,
    rsv: int = 0,
    key: bytes = b"\x9a\x02\x5c\xf4",
    declared: int | None = None,
) -> bytes:
    """A client frame, masked with ``key`` as a client masks it."""
    size = len(payload) if declared is None else declared
    first = (0x80 if fin else 0) | rsv | opcode
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = bytes((first, mask_bit | size))
    elif size < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, size)
    if not masked:
        return header + payload
    return header + key + unmask(payload, key)


def read(reader: FrameReader, stream: bytes, chunk: int) -> list[tuple[int, bytes]]:
    events = []
    for i in range(0, len(stream), chunk):
        events += reader.feed(stream[i : i + chunk])
    return events


def test_unmasking_twice_gives_the_payload_back_for_every_length_and_key() -> None:
    rng = random.Random(7)
    for size in (0, 1, 3, 4, 5, 125, 126, 1000, 65_537):
        payload, key = rng.randbytes(size), rng.randbytes(4)
        masked = unmask(payload, key)
        assert masked == bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        assert unmask(masked, key) == payload


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1000, 1 << 20])
def test_every_message_arrives_whole_whatever_the_chunking(chunk: int) -> None:
    sizes = (0, 5, 125, 126, 300, 65_535, 65_536, LIMIT)
    messages = [(TEXT if n % 2 else BINARY, b"ab" * (n // 2) + b"c" * (n % 2)) for n in sizes]
    stream = b"".join(frame(opcode, payload) for opcode, payload in messages)
    reader = FrameReader(LIMIT)
    assert read(reader, stream, chunk) == messages
    assert reader.failure is None


@pytest.mark.parametrize("chunk", [1, 4, 1000])
def test_a_fragmented_message_is_joined_and_control_frames_between_its_fragments_pass(
    chunk: int,
) -> None:
    stream = b"".join(
        (
            frame(TEXT, "héllo ".encode()[:2], fin=False),  # "h" and half of "é"
            frame(PING, b"p"),
            frame(0x0, "héllo ".encode()[2:], fin=False),
            frame(PONG, b""),
            frame(0x0, b"world"),
        )
    )
    assert read(FrameReader(LIMIT), stream, chunk) == [
        (PING, b"p"),
        (PONG, b""),
        (TEXT, "héllo world".encode()),
    ]


def _fails(stream: bytes, code: int, reason: str, limit: int = LIMIT) -> FrameReader:
    reader = FrameReader(limit)
    events = reader.feed(stream)
    assert events[-1] == (FAILED, b"") and reader.failure == (code, reason)
    return reader


@pytest.mark.parametrize(
    ("stream", "reason"),
    [
        (frame(TEXT, b"bad", masked=False), "unmasked frame"),
        (frame(3, b"x"), "reserved opcode"),
        (frame(11, b"x"), "reserved opcode"),
        (frame(TEXT, b"x", rsv=0x20), "reserved bit set"),
        (frame(TEXT, b"x", rsv=0x40), "reserved bit set"),  # RSV1 with no deflate agreed
        (frame(PING, b"x", rsv=0x40), "reserved bit set"),
        (frame(PING, b"x", fin=False), "fragmented control frame"),
        (frame(PING, b"x" * 126), "control frame too long"),
        (frame(0x0, b"x"), "continuation outside a message"),
        (frame(TEXT, b"a", fin=False) + frame(BINARY, b"b"), "a message inside a fragmented one"),
        (frame(TEXT, b"a", fin=False) + frame(0x0, b"b", rsv=0x40), "reserved bit set"),
        (frame(CLOSE, b"\x03"), "close frame of one byte"),
    ],
)
def test_each_protocol_error_fails_with_1002_and_its_reason(stream: bytes, reason: str) -> None:
    _fails(stream, 1002, reason)


def test_after_an_unmasked_frame_nothing_more_is_read() -> None:
    reader = _fails(frame(TEXT, b"bad", masked=False), 1002, "unmasked frame")
    assert reader.feed(frame(TEXT, b"later") + frame(CLOSE, b"")) == []
    assert not reader.close_received  # the framing is lost: the linger's bounds end it


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000])
def test_a_close_code_no_client_may_send_fails_with_1002(code: int) -> None:
    _fails(frame(CLOSE, struct.pack("!H", code)), 1002, "invalid close code")


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1012, 1014, 3000, 4999])
def test_a_close_is_read_with_its_code_and_reason_and_nothing_after_it(code: int) -> None:
    reader = FrameReader(LIMIT)
    payload = struct.pack("!H", code) + "au revoir ✓".encode()
    events = reader.feed(frame(CLOSE, payload) + frame(TEXT, b"after"))
    assert events == [(CLOSE, payload)] and reader.close_received
    assert close_payload(payload) == (code, "au revoir ✓")
    assert reader.feed(frame(TEXT, b"later")) == []


def test_a_close_without_a_code_reads_as_1005() -> None:
    reader = FrameReader(LIMIT)
    assert reader.feed(frame(CLOSE, b"")) == [(CLOSE, b"")]
    assert close_payload(b"") == (1005, "")


def test_invalid_utf8_fails_with_1007_in_a_text_message_and_in_a_close_reason() -> None:
    _fails(frame(TEXT, b"ok \xff"), 1007, "invalid UTF-8")
    _fails(frame(CLOSE, b"\x03\xe8\xc3"), 1007, "invalid UTF-8")
    assert FrameReader(LIMIT).feed(frame(BINARY, b"\xff")) == [(BINARY, b"\xff")]


def test_invalid_utf8_in_a_fragment_fails_before_the_message_ends() -> None:
    reader = FrameReader(LIMIT)
    assert reader.feed(frame(TEXT, "κό".encode(), fin=False)) == []
    events = reader.feed(frame(0x0, b"\xed\xa0\x80", fin=False))  # a surrogate: never UTF-8
    assert events == [(FAILED, b"")] and reader.failure == (1007, "invalid UTF-8")


def test_a_frame_over_the_limit_fails_with_1009_at_its_header_and_its_payload_is_skipped() -> None:
    header = frame(BINARY, b"", declared=LIMIT + 1)  # the header and key alone
    reader = FrameReader(LIMIT)
    assert reader.feed(header) == [(FAILED, b"")]
    assert reader.failure == (1009, "message too big")
    rest = bytes(LIMIT + 1) + frame(TEXT, b"skipped") + frame(CLOSE, b"\x03\xe8")
    read(reader, rest, 4096)
    assert reader.close_received  # the client's close is still seen: the framing held


def test_fragments_over_the_limit_fail_with_1009() -> None:
    stream = frame(BINARY, b"x" * 60, fin=False) + frame(0x0, b"x" * 41)
    _fails(stream, 1009, "message too big", limit=100)
    assert FrameReader(100).feed(frame(BINARY, b"x" * 60, fin=False) + frame(0x0, b"x" * 40))


def test_an_incomplete_frame_buffers_at_most_its_own_bytes() -> None:
    reader = FrameReader(LIMIT)
    whole = frame(BINARY, bytes(LIMIT))
    for i in range(0, len(whole) - 1, 1000):
        assert reader.feed(whole[i : min(i + 1000, len(whole) - 1)]) == []
    assert len(reader._buffer) == len(whole) - 1
    assert reader.feed(whole[-1:]) == [(BINARY, bytes(LIMIT))]
    assert len(reader._buffer) == 0


def _client_deflate(message: bytes, compressor: zlib._Compress) -> bytes:
    data = compressor.compress(message) + compressor.flush(zlib.Z_SYNC_FLUSH)
    assert data.endswith(b"\x00\x00\xff\xff")
    return data[:-4]


@pytest.mark.parametrize("chunk", [1, 13, 1 << 20])
def test_compressed_messages_are_inflated_with_the_clients_context_kept(chunk: int) -> None:
    compressor = zlib.compressobj(wbits=-15)
    messages = [b"hello hello hello", "héllo".encode() * 50, b""]
    first = _client_deflate(messages[0], compressor)
    second = _client_deflate(messages[1], compressor)
    third = _client_deflate(messages[2], compressor)
    stream = b"".join(
        (
            frame(TEXT, first, rsv=0x40),
            frame(TEXT, second[:5], fin=False, rsv=0x40),  # fragmented: RSV1 on the first
            frame(0x0, second[5:]),
            frame(BINARY, third, rsv=0x40),
            frame(BINARY, b"plain"),  # a message without RSV1 is not compressed
        )
    )
    reader = FrameReader(LIMIT, Deflate(DeflateTerms()))
    assert read(reader, stream, chunk) == [
        (TEXT, messages[0]),
        (TEXT, messages[1]),
        (BINARY, b""),
        (BINARY, b"plain"),
    ]


def test_a_compressed_message_over_the_limit_once_inflated_fails_with_1009() -> None:
    bomb = _client_deflate(bytes(LIMIT + 1), zlib.compressobj(wbits=-15))
    assert len(bomb) < 1000
    _check = FrameReader(LIMIT, Deflate(DeflateTerms()))
    assert _check.feed(frame(BINARY, bomb, rsv=0x40)) == [(FAILED, b"")]
    assert _check.failure == (1009, "message too big")


def test_compressed_garbage_fails_with_1007_and_inflated_text_must_be_utf8() -> None:
    reader = FrameReader(LIMIT, Deflate(DeflateTerms()))
    assert reader.feed(frame(BINARY, b"\xff\xff\xff\xff", rsv=0x40)) == [(FAILED, b"")]
    assert reader.failure == (1007, "invalid deflate data")
    bad_text = _client_deflate(b"\xff", zlib.compressobj(wbits=-15))
    reader = FrameReader(LIMIT, Deflate(DeflateTerms()))
    assert reader.feed(frame(TEXT, bad_text, rsv=0x40)) == [(FAILED, b"")]
    assert reader.failure == (1007, "invalid UTF-8")
