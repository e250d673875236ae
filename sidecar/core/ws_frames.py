"""WebSocket frames a server writes (RFC 6455 section 5.2): final, unmasked.

The gateway writes its data frames straight to the socket, whole, in one transport
write each: no coroutine per frame, and never interleaved with a frame aiohttp writes
(a close, a pong), which is also written whole.
"""

from __future__ import annotations

import struct

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_FIN = 0x80


def server_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame: the header, then the payload."""
    size = len(payload)
    if size < 126:
        header = bytes((_FIN | opcode, size))
    elif size < 65536:
        header = struct.pack("!BBH", _FIN | opcode, 126, size)
    else:
        header = struct.pack("!BBQ", _FIN | opcode, 127, size)
    return header + payload


PING = server_frame(OP_PING, b"")


def valid_utf8(payload: bytes) -> bytes:
    """A text frame's payload as valid UTF-8 (RFC 6455 section 5.6): itself when it is
    (checked, not copied: most text is valid), else with each invalid byte sequence
    replaced by U+FFFD."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("utf-8", errors="replace").encode()
    return payload


class MaskCheck:
    """Follows the frames a client sends, chunk by chunk, and says when one is not masked
    (RFC 6455 section 5.1: a server must close such a connection, with 1002).

    Only frame headers are read: payloads are skipped by their length. On the way it
    notes when the client's close frame has arrived whole (:attr:`close_received`): a
    lingering close (see :mod:`sidecar.core.lingering_close`) waits for it without
    parsing anything else.
    """

    __slots__ = ("_header", "_in_close", "_skip", "close_received")

    def __init__(self) -> None:
        self._header = b""  # a header split across chunks, so far
        self._skip = 0  # payload bytes of the current frame still to come
        self._in_close = False  # the current frame is a close frame
        self.close_received = False  # a close frame from the client came whole

    def feed(self, data: bytes) -> bool:
        """False once an unmasked frame has been seen (and from then on)."""
        if self._skip < 0:
            return False
        view = memoryview(data)
        position = 0
        while position < len(view):
            if self._skip:
                step = min(self._skip, len(view) - position)
                self._skip -= step
                position += step
                if not self._skip and self._in_close:
                    self.close_received = True
                continue
            header = self._header + bytes(view[position : position + 14 - len(self._header)])
            size = _header_size(header)
            if size is None or len(header) < size:
                self._header = header
                return True
            position += size - len(self._header)
            self._header = b""
            if not header[1] & 0x80:
                self._skip = -1  # unmasked: never reads on
                return False
            self._skip = _payload_length(header)
            self._in_close = header[0] & 0x0F == OP_CLOSE
            if self._in_close and not self._skip:
                self.close_received = True
        return self._skip >= 0


def _header_size(header: bytes) -> int | None:
    """The full header's length (with the 4-byte masking key), once its first two bytes
    are known."""
    if len(header) < 2:
        return None
    length = header[1] & 0x7F
    extended = 2 if length == 126 else 8 if length == 127 else 0
    return 2 + extended + (4 if header[1] & 0x80 else 0)


def _payload_length(header: bytes) -> int:
    length = header[1] & 0x7F
    if length == 126:
        return int(struct.unpack_from("!H", header, 2)[0])
    if length == 127:
        return int(struct.unpack_from("!Q", header, 2)[0])
    return length
