"""Lingering close: after the gateway's close frame, read and discard what the client
still sends until its own close frame arrives, then close TCP; bounded in bytes and time.

Why: a socket closed with unread bytes in its receive buffer sends an RST, not a FIN,
and a client still writing (the rest of a message too big for the gateway, a flood the
gateway cut) fails its next write. The close frame the gateway had just written is then
lost on the way: the client sees a dropped connection (1006) instead of 1009 or 1008.
RFC 6455 section 7.1.1 has the server close TCP only once the closing handshake is
done; lingering-close servers read and discard for a while for the same reason.

Nothing read while lingering is parsed into messages: frame headers are followed only to
find the close frame (:meth:`sidecar.core.ws_reader.FrameReader.discard`), payloads are
skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

LINGER_TIMEOUT_S = 5.0
"""How long the gateway waits for the client's close frame after sending its own: a client
cut in a flood sends what it had queued first (a few MiB, or a few seconds of a client
busy writing), then its close frame."""

LINGER_MAX_BYTES = 32 * 2**20
"""What the gateway reads and discards at most meanwhile: a client that stops at the next
frame boundary, as RFC 6455 asks, sends the rest of the frame it was writing (a 16 MiB
message in one frame is Autobahn's largest), then its close frame."""


class LingerVerdict(Enum):
    """What the transport does after bytes arrived while lingering."""

    READ_ON = "read_on"
    """Keep reading and discarding."""

    CLOSE = "close"
    """Close TCP now: the client's close frame came, or a bound was reached."""


@dataclass(slots=True)
class LingeringClose:
    """One connection's lingering close, started when the gateway's close frame went out.

    :meth:`received` is told of every chunk read (discarded) meanwhile; the transport
    closes TCP at :attr:`deadline` whatever came, and at EOF.
    """

    started: float
    timeout_s: float = LINGER_TIMEOUT_S
    max_bytes: int = LINGER_MAX_BYTES
    discarded: int = 0

    def __post_init__(self) -> None:
        if not self.timeout_s > 0:
            raise ValueError(f"a lingering close needs a positive timeout, got {self.timeout_s}")
        if self.max_bytes < 0:
            raise ValueError(f"max_bytes must not be negative, got {self.max_bytes}")

    @property
    def deadline(self) -> float:
        """When TCP is closed even if the client's close frame never came."""
        return self.started + self.timeout_s

    def received(self, size: int, close_received: bool, now: float) -> LingerVerdict:
        """``size`` more bytes were read and discarded; ``close_received``: the client's
        close frame is among what has been read so far."""
        self.discarded += size
        if close_received or self.discarded > self.max_bytes or now >= self.deadline:
            return LingerVerdict.CLOSE
        return LingerVerdict.READ_ON
