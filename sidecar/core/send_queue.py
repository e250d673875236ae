"""The bounded outbound queue of one connection, and the slow-consumer verdict.

The queue is bounded in messages and in bytes. A message with a ``coalesce_key``
replaces the queued one with the same key (only the newest state of e.g. a typing
indicator matters). When a push would cross a bound, droppable messages (presence,
typing) give way first, the oldest first; a droppable message that still does not fit
is dropped. A non-droppable message is never silently lost: it is queued beyond the
bound, and the slow-consumer clock starts. Once the queue has been over its bounds
for ``slow_consumer_grace_s``, or at once when it holds more than
:data:`HARD_CAP_FACTOR` times its byte bound, :meth:`SendQueue.verdict` says 1013:
close the connection. So the memory one connection holds is always bounded.

Every operation is O(1) (amortized over the messages it sheds).
"""

from __future__ import annotations

from collections import OrderedDict
from enum import Enum
from typing import NamedTuple

from sidecar.core.close_codes import CloseCode

HARD_CAP_FACTOR = 4
"""Past this many times its bounds a queue is cut at once, grace or not."""


class Outgoing(NamedTuple):
    """A message for the client. A named tuple: one is made per message, in a third of a
    frozen dataclass's time.

    ``droppable``: may be shed when the client reads too slowly (presence, typing).
    ``coalesce_key``: a newer message with the same key replaces this one while it is
    still queued (e.g. ``"typing:alice"``).
    """

    data: bytes
    binary: bool
    droppable: bool = False
    coalesce_key: str | None = None
    seq: int = 0  # the session's sequence number (protocol v1), 0 when unnumbered
    wire: bytes | None = None  # the whole WebSocket frame, when made once for many sessions


class PushResult(Enum):
    """What :meth:`SendQueue.push` did with a message."""

    QUEUED = "queued"
    """Queued, within the bounds."""

    COALESCED = "coalesced"
    """Queued in place of an older queued message with the same ``coalesce_key``."""

    DROPPED = "dropped"
    """The new (droppable) message was shed: it does not fit the bounds."""

    SHED_OLDER = "shed_older"
    """Older droppable messages were shed to make room, and this one queued."""

    OVER_LIMIT = "over_limit"
    """A non-droppable message queued beyond the bounds: the slow-consumer clock runs.
    Said even if the message also replaced or shed others: being over matters most."""


class SendQueue:
    """FIFO of :class:`Outgoing` for one connection, with bounds and a verdict.

    Counters: ``dropped`` (messages shed: new droppable ones, and older ones shed to make
    room) and ``coalesced`` (queued messages replaced by a newer one with the same key).
    """

    __slots__ = (
        "_bytes",
        "_droppable",
        "_droppable_bytes",
        "_grace_s",
        "_keys",
        "_max_bytes",
        "_max_messages",
        "_messages",
        "_next_seq",
        "_over_since",
        "coalesced",
        "dropped",
    )

    def __init__(
        self,
        max_messages: int = 1000,
        max_bytes: int = 1_048_576,
        slow_consumer_grace_s: float = 5.0,
    ) -> None:
        if max_messages < 1:
            raise ValueError(f"max_messages must be at least 1, got {max_messages}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        if not slow_consumer_grace_s >= 0:
            raise ValueError(f"slow_consumer_grace_s must be >= 0, got {slow_consumer_grace_s}")
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._grace_s = slow_consumer_grace_s
        # Sequence number -> message, oldest first: O(1) removal from the middle.
        self._messages: OrderedDict[int, Outgoing] = OrderedDict()
        # the droppable ones, oldest first; made with the first (most queues never hold
        # one: an object less per connection for the cycle collector to walk)
        self._droppable: OrderedDict[int, None] | None = None
        self._keys: dict[str, int] = {}  # coalesce_key -> sequence number of its message
        self._next_seq = 0
        self._bytes = 0
        self._droppable_bytes = 0
        self._over_since: float | None = None
        self.dropped = 0
        self.coalesced = 0

    def __len__(self) -> int:
        return len(self._messages)

    @property
    def bytes_queued(self) -> int:
        """The payload bytes waiting to be sent."""
        return self._bytes

    @property
    def over_limits(self) -> bool:
        """Whether the queue holds more than its bounds (non-droppable messages only)."""
        return self._exceeds(0, 0)

    def push(self, message: Outgoing, now: float) -> PushResult:
        """Queue a message for the client (or shed it); see :class:`PushResult`.

        Call :meth:`verdict` afterwards: the queue may now be over its bounds.
        """
        size = len(message.data)
        coalesced = False
        if message.coalesce_key is not None and message.coalesce_key in self._keys:
            self._remove(self._keys[message.coalesce_key])
            self.coalesced += 1
            coalesced = True
        shed = False
        if self._exceeds(1, size):
            if message.droppable and not self._can_make_room(size):
                self.dropped += 1
                self._track_clock(now)
                return PushResult.DROPPED
            shed = self._shed_oldest_droppable(size)
        self._append(message)
        self._track_clock(now)
        if self.over_limits:
            return PushResult.OVER_LIMIT
        if coalesced:
            return PushResult.COALESCED
        return PushResult.SHED_OLDER if shed else PushResult.QUEUED

    def peek(self) -> Outgoing | None:
        """The oldest queued message, left in the queue; None if it is empty."""
        if not self._messages:
            return None
        return self._messages[next(iter(self._messages))]

    def pop(self) -> Outgoing | None:
        """The oldest queued message, removed from the queue; None if it is empty."""
        if not self._messages:
            return None
        seq = next(iter(self._messages))
        message = self._messages[seq]
        self._remove(seq)
        if not self.over_limits:
            self._over_since = None
        return message

    def verdict(self, now: float) -> CloseCode | None:
        """1013 when the client reads too slowly, else None.

        Too slowly: over the bounds continuously for ``slow_consumer_grace_s``, or more
        than :data:`HARD_CAP_FACTOR` times the bounds at all.
        """
        if (
            self._bytes > HARD_CAP_FACTOR * self._max_bytes
            or len(self._messages) > HARD_CAP_FACTOR * self._max_messages
        ):
            return CloseCode.TRY_AGAIN_LATER
        if self._over_since is not None and now - self._over_since >= self._grace_s:
            return CloseCode.TRY_AGAIN_LATER
        return None

    def _exceeds(self, extra_messages: int, extra_bytes: int) -> bool:
        return (
            len(self._messages) + extra_messages > self._max_messages
            or self._bytes + extra_bytes > self._max_bytes
        )

    def _can_make_room(self, size: int) -> bool:
        """Whether shedding every queued droppable message makes room for ``size`` bytes."""
        messages = len(self._messages) - len(self._droppable or ()) + 1
        queued = self._bytes - self._droppable_bytes + size
        return messages <= self._max_messages and queued <= self._max_bytes

    def _shed_oldest_droppable(self, size: int) -> bool:
        """Shed droppable messages, oldest first, until ``size`` more bytes fit (or none
        is left). Whether any was shed."""
        shed = False
        droppable = self._droppable
        while droppable and self._exceeds(1, size):
            self._remove(next(iter(droppable)))
            self.dropped += 1
            shed = True
        return shed

    def _append(self, message: Outgoing) -> None:
        seq = self._next_seq
        self._next_seq += 1
        self._messages[seq] = message
        self._bytes += len(message.data)
        if message.droppable:
            if self._droppable is None:
                self._droppable = OrderedDict()
            self._droppable[seq] = None
            self._droppable_bytes += len(message.data)
        if message.coalesce_key is not None:
            self._keys[message.coalesce_key] = seq

    def _remove(self, seq: int) -> None:
        message = self._messages.pop(seq)
        self._bytes -= len(message.data)
        if message.droppable and self._droppable is not None:
            del self._droppable[seq]
            self._droppable_bytes -= len(message.data)
        if message.coalesce_key is not None and self._keys.get(message.coalesce_key) == seq:
            del self._keys[message.coalesce_key]

    def _track_clock(self, now: float) -> None:
        if not self.over_limits:
            self._over_since = None
        elif self._over_since is None:
            self._over_since = now
