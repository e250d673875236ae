"""WebSocket frames a server writes (RFC 6455 section 5.2): final, unmasked.

The gateway writes its frames straight to the socket, whole (see
:mod:`sidecar.websocket_transport`): no coroutine per frame, and a frame is never split
or interleaved with another. What clients send is read by :mod:`sidecar.core.ws_reader`.
"""

from __future__ import annotations

import struct

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_FIN = 0x80
RSV1 = 0x40  # on a data frame: its payload is compressed (permessage-deflate)


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
CLOSE_EMPTY = server_frame(OP_CLOSE, b"")  # the answer to a close frame without a code


def close_frame(code: int, reason: str) -> bytes:
    """A close frame: the code, then the reason (cut to fit by the caller)."""
    return server_frame(OP_CLOSE, struct.pack("!H", code) + reason.encode())


def valid_utf8(payload: bytes) -> bytes:
    """A text frame's payload as valid UTF-8 (RFC 6455 section 5.6): itself when it is
    (checked, not copied: most text is valid), else with each invalid byte sequence
    replaced by U+FFFD."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.decode("utf-8", errors="replace").encode()
    return payload
