"""What a client sends on a WebSocket (RFC 6455 section 5), read frame by frame: its
messages, pings, pongs and close, or the failure that closes the connection.

Sans-I/O: bytes in (as they arrive, split anywhere), events out. Every rule a server must
enforce is here, each decided as early as the bytes allow (a frame too big is refused at
its header, before its payload is buffered):

- every client frame is masked (1002 otherwise);
- no reserved bit, unless permessage-deflate was agreed (RSV1, first frame of a message);
- no reserved opcode; control frames are final and at most 125 bytes; continuation frames
  only inside a fragmented message, data frames only outside one (1002);
- a message (all its fragments; inflated, when compressed) is at most ``max_message_bytes``
  (1009);
- text is valid UTF-8, checked fragment by fragment (1007); a close frame's code is one a
  client may send and its reason valid UTF-8 (1002, 1007).

After a failure, or once the gateway has closed (:meth:`FrameReader.discard`), frames are
skipped by their length and only the client's close frame is noted
(:attr:`FrameReader.close_received`): a lingering close waits for it.
"""

from __future__ import annotations

import codecs
from typing import Final, Protocol

from sidecar.core.close_codes import CloseCode
from sidecar.core.ws_frames import OP_BINARY, OP_CLOSE, OP_PONG, OP_TEXT

OP_CONTINUATION: Final = 0x0
FAILED: Final = -1  # the event of a failure: the code and reason are in FrameReader.failure

Event = tuple[int, bytes]  # (opcode or FAILED, payload): a message, a ping, a pong, a close

_RSV1 = 0x40
_RSV_ALL = 0x70
_MAX_CONTROL = 125
# close codes a client may send (RFC 6455 section 7.4; 1012-1014 registered at IANA since)
_SENDABLE_CLOSE = frozenset((1000, 1001, 1002, 1003, *range(1007, 1015)))


class Inflater(Protocol):
    """permessage-deflate, as agreed for this connection (see :mod:`sidecar.core.ws_deflate`)."""

    def decompress(self, payload: bytes, limit: int) -> bytes | None:
        """The message inflated; None when it would exceed ``limit`` bytes. Raises
        ``ValueError`` when it is not deflate data."""


def unmask(payload: bytes, mask: bytes) -> bytes:
    """The payload XORed with its 4-byte masking key (RFC 6455 section 5.3), as one
    operation on two integers: C speed, whatever the length."""
    size = len(payload)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(
        size, "little"
    )


def close_payload(payload: bytes) -> tuple[int, str]:
    """The code and reason of a (valid) close frame from the client; 1005 when it has
    no code (RFC 6455 section 7.1.5)."""
    if not payload:
        return CloseCode.NO_STATUS, ""
    return int.from_bytes(payload[:2], "big"), payload[2:].decode("utf-8")


class FrameReader:
    """The client frames of one connection: :meth:`feed` the bytes as they come."""

    __slots__ = (
        "_buffer",
        "_compressed",
        "_discarding",
        "_inflater",
        "_lost",
        "_max",
        "_need",
        "_opcode",
        "_parts",
        "_size",
        "_skip",
        "_skip_close",
        "_utf8",
        "close_received",
        "failure",
    )

    def __init__(self, max_message_bytes: int, inflater: Inflater | None = None) -> None:
        self._max = max_message_bytes
        self._inflater = inflater
        self._buffer = bytearray()  # an incomplete frame, so far
        self._need = 0  # the bytes that frame needs in all (0: its header is not whole yet)
        self._opcode = OP_CONTINUATION  # of the fragmented message under way, if any
        self._parts: list[bytes] = []  # its fragments so far
        self._size = 0  # their bytes
        self._compressed = False
        self._utf8: codecs.IncrementalDecoder | None = None  # a fragmented text's check
        self._discarding = False  # skip frames, note only the close
        self._lost = False  # the framing is lost: nothing more can be read
        self._skip = 0  # payload bytes to skip (discarding)
        self._skip_close = False  # the frame being skipped is a close frame
        self.close_received = False  # the client's close frame came whole
        self.failure: tuple[int, str] | None = None  # what the connection closes with

    def discard(self) -> None:
        """From now on skip every frame, only noting the client's close (the gateway has
        sent its close frame: RFC 6455 section 1.4)."""
        self._discarding = True
        self._parts, self._utf8 = [], None

    def feed(self, data: bytes) -> list[Event]:
        """The events of these bytes (and of any frame they complete), in order."""
        events: list[Event] = []
        if self._lost or self.close_received:
            return events
        if self._discarding:
            self._skim(data)
            return events
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._need:
                return events
            data = bytes(buffer)
            buffer.clear()
        position = self._read(data, events)
        if position < len(data) and not self._lost:
            if self._discarding:
                self._skim(data[position:])
            elif not self.close_received:
                self._buffer += memoryview(data)[position:]
        return events

    def _read(self, data: bytes, events: list[Event]) -> int:
        """Read whole frames from ``data``; where the first incomplete one starts."""
        end = len(data)
        position = 0
        while end - position >= 2:
            first = data[position]
            second = data[position + 1]
            length = second & 0x7F
            header = 6
            if length == 126:
                header = 8
                if end - position < 4:
                    self._need = 4
                    return position
                length = int.from_bytes(data[position + 2 : position + 4], "big")
            elif length == 127:
                header = 14
                if end - position < 10:
                    self._need = 10
                    return position
                length = int.from_bytes(data[position + 2 : position + 10], "big")
            refused = self._refuse(first, second, length)
            if refused is not None:
                self._fail(events, *refused)
                if self._discarding:  # the framing holds: skip this frame, then read on
                    rest = position + header
                    self._skip, self._skip_close = length + max(0, rest - end), False
                    if rest < end:
                        self._skim(data[rest:])
                return end
            frame_end = position + header + length
            if frame_end > end:
                self._need = header + length
                return position
            start = frame_end - length
            payload = unmask(data[start:frame_end], data[start - 4 : start])
            position = frame_end
            if not self._frame(first, payload, events):
                return position if self._discarding else end
        self._need = 2
        return position

    def _refuse(self, first: int, second: int, length: int) -> tuple[int, str, bool] | None:
        """Why a frame with this header is refused (code, reason, whether the framing still
        holds), before any of its payload is read."""
        if not second & 0x80:
            return CloseCode.PROTOCOL_ERROR, "unmasked frame", False
        opcode = first & 0x0F
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                return CloseCode.PROTOCOL_ERROR, "reserved opcode", False
            if not first & 0x80:
                return CloseCode.PROTOCOL_ERROR, "fragmented control frame", False
            if length > _MAX_CONTROL:
                return CloseCode.PROTOCOL_ERROR, "control frame too long", False
            if first & _RSV_ALL:
                return CloseCode.PROTOCOL_ERROR, "reserved bit set", False
            return None
        if opcode > OP_BINARY:
            return CloseCode.PROTOCOL_ERROR, "reserved opcode", False
        rsv = first & _RSV_ALL
        if opcode == OP_CONTINUATION:
            if self._opcode == OP_CONTINUATION:
                return CloseCode.PROTOCOL_ERROR, "continuation outside a message", False
            if rsv:
                return CloseCode.PROTOCOL_ERROR, "reserved bit set", False
        else:
            if self._opcode != OP_CONTINUATION:
                return CloseCode.PROTOCOL_ERROR, "a message inside a fragmented one", False
            if rsv and (rsv != _RSV1 or self._inflater is None):
                return CloseCode.PROTOCOL_ERROR, "reserved bit set", False
        if self._size + length > self._max:
            return CloseCode.MESSAGE_TOO_BIG, "message too big", True
        return None

    def _frame(self, first: int, payload: bytes, events: list[Event]) -> bool:
        """One whole frame; False when reading stops (a failure, or the client's close)."""
        opcode = first & 0x0F
        if opcode >= OP_CLOSE:
            if opcode != OP_CLOSE:
                events.append((opcode, payload))
                return True
            return self._close(payload, events)
        final = first & 0x80
        if opcode != OP_CONTINUATION:
            if final and not first & _RSV1:  # the usual message: one frame
                if opcode == OP_TEXT and not payload.isascii() and not _utf8(payload):
                    return self._fail(events, CloseCode.INVALID_PAYLOAD, "invalid UTF-8", True)
                events.append((opcode, payload))
                return True
            self._opcode = opcode
            self._compressed = bool(first & _RSV1)
            if opcode == OP_TEXT and not self._compressed:
                self._utf8 = codecs.getincrementaldecoder("utf-8")()
        if self._utf8 is not None:
            try:
                self._utf8.decode(payload, bool(final))
            except UnicodeDecodeError:
                return self._fail(events, CloseCode.INVALID_PAYLOAD, "invalid UTF-8", True)
        self._parts.append(payload)
        self._size += len(payload)
        if not final:
            return True
        message = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        opcode, compressed = self._opcode, self._compressed
        self._opcode, self._parts, self._size = OP_CONTINUATION, [], 0
        self._compressed, self._utf8 = False, None
        if compressed:
            assert self._inflater is not None  # RSV1 is refused without it
            try:
                inflated = self._inflater.decompress(message, self._max)
            except ValueError:
                return self._fail(events, CloseCode.INVALID_PAYLOAD, "invalid deflate data", True)
            if inflated is None:
                return self._fail(events, CloseCode.MESSAGE_TOO_BIG, "message too big", True)
            message = inflated
            if opcode == OP_TEXT and not message.isascii() and not _utf8(message):
                return self._fail(events, CloseCode.INVALID_PAYLOAD, "invalid UTF-8", True)
        events.append((opcode, message))
        return True

    def _close(self, payload: bytes, events: list[Event]) -> bool:
        if len(payload) == 1:
            return self._fail(events, CloseCode.PROTOCOL_ERROR, "close frame of one byte", True)
        if payload:
            code = int.from_bytes(payload[:2], "big")
            if code not in _SENDABLE_CLOSE and not 3000 <= code <= 4999:
                return self._fail(events, CloseCode.PROTOCOL_ERROR, "invalid close code", True)
            if not _utf8(payload[2:]):
                return self._fail(events, CloseCode.INVALID_PAYLOAD, "invalid UTF-8", True)
        self.close_received = True
        events.append((OP_CLOSE, payload))
        return False

    def _fail(self, events: list[Event], code: int, reason: str, framed: bool) -> bool:
        """The connection fails: one FAILED event. With the framing intact, frames are
        skipped from here on (the close may still come); else nothing more is read."""
        self.failure = (code, reason)
        events.append((FAILED, b""))
        self._parts, self._utf8, self._opcode = [], None, OP_CONTINUATION
        if framed:
            self._discarding = True
        else:
            self._lost = True
        return False

    def _skim(self, data: bytes) -> None:
        """Discarding: skip payloads by their length, note the client's close frame."""
        position, end = 0, len(data)
        if self._buffer:
            data = bytes(self._buffer) + data
            self._buffer.clear()
            end = len(data)
        while position < end and not self.close_received:
            if self._skip:
                step = min(self._skip, end - position)
                self._skip -= step
                position += step
                if not self._skip and self._skip_close:
                    self.close_received = True
                continue
            if end - position < 2:
                break
            second = data[position + 1]
            length = second & 0x7F
            size = (
                2
                + (2 if length == 126 else 8 if length == 127 else 0)
                + (4 if second & 0x80 else 0)
            )
            if end - position < size:
                break
            if length == 126:
                length = int.from_bytes(data[position + 2 : position + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[position + 2 : position + 10], "big")
            position += size
            self._skip = length
            self._skip_close = data[position - size] & 0x0F == OP_CLOSE
            if not length and self._skip_close:
                self.close_received = True
        if position < end and not self.close_received:
            self._buffer += memoryview(data)[position:]


def _utf8(payload: bytes) -> bool:
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
