"""WebSocket frames a server writes (RFC 6455 section 5.2): final, unmasked.

The gateway writes its data frames straight to the socket, whole, in one transport
write each: no coroutine per frame, and never interleaved with a frame aiohttp writes
(a close, a pong), which is also written whole.
"""

from __future__ import annotations

import struct

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_PING = 0x9
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
