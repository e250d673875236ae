"""The frames of one long-poll session between polls, and the answer to a poll.

A poll hands out what is there; numbered frames stay until the client acknowledges them
(``last_seq`` of its next poll: a lost answer is sent again), unnumbered ones (the
welcome, notices, channel answers and publications) go once. The buffer is bounded in
frames and in bytes: when it is full, :attr:`PollBuffer.has_room` is False and the
session's writer waits, so its send queue fills and the slow-consumer rule that cuts a
WebSocket which does not read (1013) cuts a poll client that does not acknowledge.

Frames are kept as the JSON text they go out as; an answer joins them (no parse, no
re-encoding), so a poll costs a copy of at most the buffer's bound.
"""

from __future__ import annotations

import collections
import json

from sidecar.core import envelope

DEFAULT_MAX_FRAMES = 1000
DEFAULT_MAX_BYTES = 1 << 20


class PollBuffer:
    """Frames waiting for a poll: ``(seq, frame)``, oldest first; ``seq`` 0 is unnumbered."""

    __slots__ = ("_bytes", "_frames", "max_bytes", "max_frames")

    def __init__(
        self, max_frames: int = DEFAULT_MAX_FRAMES, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        if max_frames < 1 or max_bytes < 1:
            raise ValueError(f"a poll buffer needs room, got {max_frames} frames, {max_bytes} B")
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self._frames: collections.deque[tuple[int, bytes]] = collections.deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def bytes_held(self) -> int:
        """The bytes of the frames held."""
        return self._bytes

    @property
    def has_room(self) -> bool:
        """Whether another frame may be added now. One frame may cross the byte bound (a
        frame of any size gets through an empty buffer), so the buffer holds at most
        ``max_bytes`` plus one frame."""
        return len(self._frames) < self.max_frames and self._bytes < self.max_bytes

    def add(self, seq: int, frame: bytes) -> None:
        """Keep a frame for the next poll (the caller has checked :attr:`has_room`, or is
        closing: the last frames of a closing session are kept whatever the bounds)."""
        self._frames.append((seq, frame))
        self._bytes += len(frame)

    def acknowledge(self, last_seq: int) -> None:
        """Forget the numbered frames the client has (up to ``last_seq``)."""
        if not any(seq and seq <= last_seq for seq, _ in self._frames):
            return
        self._frames = collections.deque(
            (seq, frame) for seq, frame in self._frames if not seq or seq > last_seq
        )
        self._bytes = sum(len(frame) for _, frame in self._frames)

    def take(self) -> list[bytes]:
        """Every frame for a poll's answer, oldest first (so an answer is bounded like the
        buffer). The unnumbered ones are handed out once: forgotten now."""
        answer = [frame for _, frame in self._frames]
        if any(not seq for seq, _ in self._frames):
            self._frames = collections.deque(item for item in self._frames if item[0])
            self._bytes = sum(len(frame) for _, frame in self._frames)
        return answer


def poll_answer(session_id: str, frames: list[bytes], closed: tuple[int, str] | None) -> bytes:
    """A poll's JSON answer, ``{"session": S, "frames": [...]}``: the frames' own text
    joined, then the close frame when the session has ended."""
    if closed is not None:
        frames = [*frames, envelope.close(*closed).encode()]
    return b'{"session":%s,"frames":[%s]}' % (json.dumps(session_id).encode(), b",".join(frames))


__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_FRAMES", "PollBuffer", "poll_answer"]
