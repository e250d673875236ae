"""The bounded outbound queue of one connection, and the slow-consumer verdict.

Bounded in messages and bytes. When a client reads too slowly the queue
first sheds what may be lost (messages marked droppable, e.g. presence or
typing), coalesces what may be merged (same ``coalesce_key``: only the newest
is kept), and only then lets non-droppable messages exceed the bound; once it
has been over the bound for ``slow_consumer_grace_s``, or past a hard cap of 4x
the byte bound at any time, the verdict is 1013: close the connection. Memory
per connection therefore never grows without bound.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from enum import Enum

from sidecar.session.close_codes import CloseCode

HARD_CAP_FACTOR = 4


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message for the client."""

    data: bytes
    binary: bool = False
    droppable: bool = False
    coalesce_key: str | None = None


class PushResult(Enum):
    QUEUED = "queued"
    COALESCED = "coalesced"  # replaced a queued message with the same coalesce_key
    DROPPED = "dropped"  # the new (droppable) message was shed
    SHED_OLDER = "shed_older"  # older droppable messages were shed to make room
    OVER_LIMIT = "over_limit"  # queued beyond the bound: the slow-consumer clock runs


class SendQueue:
    """FIFO of :class:`Outgoing` with bounds, shedding, coalescing and a verdict."""

    __slots__ = (
        "_bytes",
        "_grace_s",
        "_items",
        "_max_bytes",
        "_max_messages",
        "_over_since",
        "coalesced",
        "dropped",
    )

    def __init__(
        self,
        max_messages: int = 1000,
        max_bytes: int = 1 << 20,
        slow_consumer_grace_s: float = 5.0,
    ) -> None:
        if max_messages < 1 or max_bytes < 1 or slow_consumer_grace_s < 0:
            raise ValueError("send queue bounds must be positive")
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._grace_s = slow_consumer_grace_s
        self._items: collections.deque[Outgoing] = collections.deque()
        self._bytes = 0
        self._over_since: float | None = None
        self.dropped = 0
        self.coalesced = 0

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes_queued(self) -> int:
        return self._bytes

    def _over(self, extra_messages: int = 0, extra_bytes: int = 0) -> bool:
        return (
            len(self._items) + extra_messages > self._max_messages
            or self._bytes + extra_bytes > self._max_bytes
        )

    def push(self, message: Outgoing, now: float) -> PushResult:
        size = len(message.data)
        if message.coalesce_key is not None:
            for index, queued in enumerate(self._items):
                if queued.coalesce_key == message.coalesce_key:
                    self._bytes += size - len(queued.data)
                    del self._items[index]
                    self._items.append(message)
                    self.coalesced += 1
                    self._update_clock(now)
                    return PushResult.COALESCED
        result = PushResult.QUEUED
        if self._over(1, size):
            if message.droppable:
                self.dropped += 1
                return PushResult.DROPPED
            if self._shed_droppable(size):
                result = PushResult.SHED_OLDER
        self._items.append(message)
        self._bytes += size
        if self._over():
            result = PushResult.OVER_LIMIT
        self._update_clock(now)
        return result

    def _shed_droppable(self, room_for: int) -> bool:
        kept: collections.deque[Outgoing] = collections.deque()
        shed = False
        for queued in self._items:
            if queued.droppable and self._over(1, room_for):
                self._bytes -= len(queued.data)
                self.dropped += 1
                shed = True
            else:
                kept.append(queued)
        self._items = kept
        return shed

    def pop(self, now: float | None = None) -> Outgoing | None:
        if not self._items:
            return None
        message = self._items.popleft()
        self._bytes -= len(message.data)
        if now is not None:
            self._update_clock(now)
        elif not self._over():
            self._over_since = None
        return message

    def _update_clock(self, now: float) -> None:
        if self._over():
            if self._over_since is None:
                self._over_since = now
        else:
            self._over_since = None

    def verdict(self, now: float) -> CloseCode | None:
        """1013 once over the bound for the grace period, or at once past the hard cap."""
        if self._bytes > HARD_CAP_FACTOR * self._max_bytes:
            return CloseCode.TRY_AGAIN_LATER
        if self._over_since is not None and now - self._over_since >= self._grace_s:
            return CloseCode.TRY_AGAIN_LATER
        return None
