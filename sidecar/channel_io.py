"""The gateway's calls to the channel store, gathered (:mod:`wsfleet.channels.batched`):
publications, history reads, and presence entries (written in batches and refreshed well
within their TTL)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from wsfleet.channels.batched import BatchedCalls
from wsfleet.channels.store import (
    ChannelStore,
    ChannelStoreUnavailable,
    History,
    HistoryRequest,
    Position,
    PresenceUpdate,
    PublishRequest,
)


def publisher(
    store: ChannelStore, spacing_s: float, on_error: Callable[[], None]
) -> BatchedCalls[PublishRequest, Position]:
    return BatchedCalls(store.publish, spacing_s, on_error)


def history_reader(
    store: ChannelStore, spacing_s: float, on_error: Callable[[], None]
) -> BatchedCalls[HistoryRequest, History]:
    return BatchedCalls(store.history, spacing_s, on_error)


class PresenceWriter:
    """This gateway's presence entries: changes gathered into one call per batch, and
    every entry refreshed well within its TTL (a SIGKILLed gateway's entries expire)."""

    def __init__(
        self,
        store: ChannelStore,
        ttl_s: float,
        spacing_s: float,
        on_error: Callable[[], None],
    ) -> None:
        self._store = store
        self.ttl_s = ttl_s
        self._on_error = on_error
        self._entries: dict[tuple[str, str], bytes] = {}  # (channel, session) -> info
        self._calls: BatchedCalls[PresenceUpdate, None] = BatchedCalls(
            self._update, spacing_s, on_error
        )

    def __len__(self) -> int:
        return len(self._entries)

    async def _update(
        self, updates: Sequence[PresenceUpdate]
    ) -> list[ChannelStoreUnavailable | None]:
        try:
            await self._store.update_presence(updates, self.ttl_s)
        except ChannelStoreUnavailable as exc:
            return [exc] * len(updates)
        return [None] * len(updates)

    def join(self, channel: str, session: str, info: bytes, announce: bool) -> None:
        self._entries[(channel, session)] = info
        self._calls.submit(PresenceUpdate(channel, session, info, True, announce), _ignore)

    def leave(self, channel: str, session: str, announce: bool) -> None:
        info = self._entries.pop((channel, session), None)
        if info is not None:
            self._calls.submit(PresenceUpdate(channel, session, info, False, announce), _ignore)

    def refresh(self) -> None:
        """Write every entry again (its expiry moves on by the TTL)."""
        for (channel, session), info in self._entries.items():
            self._calls.submit(PresenceUpdate(channel, session, info, True), _ignore)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_s / 3)
            self.refresh()

    async def flush(self, timeout_s: float) -> None:
        await self._calls.flush(timeout_s)

    async def stop(self) -> None:
        await self._calls.stop()


def _ignore(_: object) -> None:
    return None
