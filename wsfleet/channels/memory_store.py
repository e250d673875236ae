"""Channels in memory, for unit tests: the same behaviour as Redis, one process.

Time follows ``clock`` (history and presence expiry); what is published to a topic is
appended to :attr:`MemoryChannelStore.sent` and handed to the topic's listeners.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from wsfleet.channels.messages import (
    Publication,
    presence_message,
    publication_message,
    publish_time_field,
)
from wsfleet.channels.store import (
    META_TTL_S,
    NO_POSITION,
    ChannelStoreUnavailable,
    History,
    HistoryRequest,
    Position,
    PresenceUpdate,
    PublishRequest,
)


@dataclass
class _Channel:
    epoch: str = ""
    offset: int = 0
    meta_expires: float = 0.0
    history: list[Publication] = field(default_factory=list)
    history_expires: float = 0.0
    presence: dict[str, tuple[bytes, float]] = field(default_factory=dict)  # session -> (info, exp)


class MemoryChannelStore:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        pods_of_user: Callable[[str], set[str]] = lambda user: set(),
        namespace: str = "wsfleet",
    ) -> None:
        self._clock = clock
        self._pods_of_user = pods_of_user
        self._ns = namespace
        self._channels: dict[str, _Channel] = {}
        self.sent: list[tuple[str, bytes]] = []  # (topic, message), in order
        self.listeners: dict[str, list[Callable[[bytes], None]]] = {}
        self.down = False  # True: every call fails as if the store were unreachable

    def topic(self, channel: str) -> str:
        return f"{self._ns}:topic:{channel}"

    def command_topic(self, pod_id: str) -> str:
        return f"{self._ns}:podcmd:{pod_id}"

    def _send(self, topic: str, message: bytes) -> None:
        self.sent.append((topic, message))
        for listener in self.listeners.get(topic, []):
            listener(message)

    def _channel(self, name: str) -> _Channel:
        channel = self._channels.setdefault(name, _Channel())
        now = self._clock()
        if channel.epoch and now >= channel.meta_expires:
            channel.epoch, channel.offset, channel.history = "", 0, []
        if channel.history and now >= channel.history_expires:
            channel.history = []
        return channel

    def _check(self) -> None:
        if self.down:
            raise ChannelStoreUnavailable("the memory store is down")

    async def publish(
        self, requests: Sequence[PublishRequest]
    ) -> list[Position | ChannelStoreUnavailable]:
        if self.down:
            return [ChannelStoreUnavailable("down") for _ in requests]
        positions: list[Position | ChannelStoreUnavailable] = []
        for request in requests:
            topic = self.topic(request.channel)
            published_us = publish_time_field(request.published_at)
            if request.history_size <= 0:
                self._send(
                    topic,
                    publication_message(
                        0, "", request.data, request.binary, request.info, published_us
                    ),
                )
                positions.append(NO_POSITION)
                continue
            channel = self._channel(request.channel)
            now = self._clock()
            if not channel.epoch:
                channel.epoch, channel.offset, channel.history = os.urandom(4).hex(), 0, []
            channel.offset += 1
            publication = Publication(
                request.channel,
                channel.offset,
                channel.epoch,
                request.data,
                request.binary,
                request.info,
            )
            channel.history = [*channel.history, publication][-request.history_size :]
            channel.history_expires = now + request.history_ttl_s
            channel.meta_expires = now + max(request.history_ttl_s, META_TTL_S)
            self._send(
                topic,
                publication_message(
                    channel.offset,
                    channel.epoch,
                    request.data,
                    request.binary,
                    request.info,
                    published_us,
                ),
            )
            positions.append(Position(channel.epoch, channel.offset))
        return positions

    async def history(
        self, requests: Sequence[HistoryRequest]
    ) -> list[History | ChannelStoreUnavailable]:
        if self.down:
            return [ChannelStoreUnavailable("down") for _ in requests]
        answers: list[History | ChannelStoreUnavailable] = []
        for request in requests:
            channel = self._channel(request.channel)
            if not channel.epoch:
                channel.epoch, channel.offset, channel.history = os.urandom(4).hex(), 0, []
                channel.meta_expires = self._clock() + max(request.history_ttl_s, META_TTL_S)
            after = request.after
            publications = (
                [p for p in channel.history if p.offset > after][: max(1, request.limit)]
                if after is not None and after >= 0
                else []
            )
            answers.append(History(Position(channel.epoch, channel.offset), publications))
        return answers

    async def update_presence(self, updates: Sequence[PresenceUpdate], ttl_s: float) -> None:
        self._check()
        now = self._clock()
        for update in updates:
            presence = self._channel(update.channel).presence
            topic = self.topic(update.channel)
            if update.present:
                presence[update.session] = (update.info, now + ttl_s)
                if update.announce:
                    self._send(topic, presence_message(True, update.info))
            elif presence.pop(update.session, None) is not None and update.announce:
                self._send(topic, presence_message(False, update.info))

    def _live_presence(self, channel: str) -> list[bytes]:
        presence = self._channel(channel).presence
        now = self._clock()
        for session in [s for s, (_, expires) in presence.items() if expires <= now]:
            del presence[session]
        return [info for info, _ in presence.values()]

    async def presence(self, channel: str) -> list[bytes]:
        self._check()
        return self._live_presence(channel)

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        self._check()
        entries = self._live_presence(channel)
        users = set()
        for info in entries:
            try:
                entry = json.loads(info)
            except ValueError:
                continue
            if isinstance(entry, dict) and isinstance(entry.get("user"), str):
                users.add(entry["user"])
        return len(entries), len(users)

    async def command_user(self, user_id: str, message: bytes) -> int:
        self._check()
        pods = self._pods_of_user(user_id)
        for pod in sorted(pods):
            self._send(self.command_topic(pod), message)
        return len(pods)

    async def ping(self) -> None:
        self._check()

    async def close(self) -> None:
        return None
