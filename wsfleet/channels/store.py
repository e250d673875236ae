"""What channels keep in the store, and the interface every store implements.

Two implementations pass one contract suite (``tests/integration/test_channel_store.py``):
:class:`~wsfleet.channels.redis_store.RedisChannelStore` (one Redis or a Redis Cluster)
and :class:`~wsfleet.channels.memory_store.MemoryChannelStore` (unit tests). Every call
takes a batch: a gateway gathers what one turn of its event loop asked for and makes one
call, one round trip (per node).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from wsfleet.channels.messages import Publication


class ChannelStoreUnavailable(Exception):
    """The store cannot be reached right now (or refused one call of a batch)."""


@dataclass(frozen=True, slots=True)
class Position:
    """Where a channel's stream stands: its epoch and its last offset (0: none yet). A
    channel without history has no position: ``Position("", 0)``."""

    epoch: str
    offset: int


NO_POSITION = Position("", 0)


@dataclass(frozen=True, slots=True)
class PublishRequest:
    channel: str
    data: bytes
    binary: bool
    info: bytes  # the publisher's info, a JSON object (b"": none)
    history_size: int  # 0: no history (no offset either)
    history_ttl_s: float
    # when the publisher asked (Unix seconds, its clock): set once, where the publication
    # is made (the server API's call, a client's or a backend's publish on a gateway), and
    # carried in the topic message so that gateways time deliveries from it (0: none; the
    # caller stamps it, so that this module stays clock-free for the sidecar's core)
    published_at: float = 0.0


@dataclass(frozen=True, slots=True)
class HistoryRequest:
    """A channel's position (its epoch is made if the channel has none yet) and, with
    ``after``, up to ``limit`` publications after that offset."""

    channel: str
    after: int | None
    limit: int
    history_ttl_s: float  # how long a new epoch lives (the history's TTL, at least a day)


@dataclass(frozen=True, slots=True)
class History:
    position: Position
    publications: list[Publication]  # offsets above ``after``, in order

    def reaches_back_to(self, after: int) -> bool:
        """Whether these publications are every one after ``after`` up to the position
        (the client that had ``after`` misses nothing)."""
        if after > self.position.offset:
            return False
        expected = self.position.offset - after
        if len(self.publications) != expected:
            return False
        return all(p.offset == after + 1 + i for i, p in enumerate(self.publications))


@dataclass(frozen=True, slots=True)
class PresenceUpdate:
    """One subscriber's presence in one channel: present (added or refreshed) or gone;
    ``announce`` also tells the channel's subscribers (a join or a leave)."""

    channel: str
    session: str
    info: bytes  # a JSON object: user, session, transport, pod
    present: bool
    announce: bool = False


META_TTL_S = 86_400.0
"""A channel's epoch lives at least this long after its last publication (longer when its
history does), so that a client coming back within a day learns whether it missed
anything even when the history itself has expired."""


class ChannelStore(Protocol):
    def topic(self, channel: str) -> str:
        """The pub/sub topic of a channel's publications, joins and leaves."""

    def command_topic(self, pod_id: str) -> str:
        """The pub/sub topic of one gateway's commands."""

    async def publish(
        self, requests: Sequence[PublishRequest]
    ) -> list[Position | ChannelStoreUnavailable]:
        """Append each publication to its channel's history (when it keeps one), give it
        the next offset and send it to the channel's topic: one call per publication, all
        in one round trip. The new positions, in order (an error in the place of a
        publication that failed)."""

    async def history(
        self, requests: Sequence[HistoryRequest]
    ) -> list[History | ChannelStoreUnavailable]:
        """Positions and publications, in one round trip."""

    async def update_presence(self, updates: Sequence[PresenceUpdate], ttl_s: float) -> None:
        """Add, refresh or remove presence entries (one round trip); an entry that is not
        refreshed within ``ttl_s`` is gone (by the store's own clock)."""

    async def presence(self, channel: str) -> list[bytes]:
        """The channel's live presence entries (each a JSON object)."""

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        """(entries, distinct users) of the channel's live presence."""

    async def command_user(self, user_id: str, message: bytes) -> int:
        """Send ``message`` to the command topic of every gateway holding one of the user's
        connections (the registry knows where); how many gateways that was."""

    async def ping(self) -> None:
        """Raise :class:`ChannelStoreUnavailable` unless the store answers."""

    async def close(self) -> None: ...


__all__ = [
    "META_TTL_S",
    "NO_POSITION",
    "ChannelStore",
    "ChannelStoreUnavailable",
    "History",
    "HistoryRequest",
    "Position",
    "PresenceUpdate",
    "PublishRequest",
]
