"""The gateway's calls to the channel store, gathered: whatever one turn of the event loop
asks for (publications, history reads, presence changes) goes out as one call, one round
trip, and batches leave at least the batch spacing apart while busy
(``wsfleet.batch_spacing``). Nothing here creates a task or a future per item: a
requester hands over a callback (an awaiting one makes its own future: subscribes, not
messages)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog

from wsfleet.batch_spacing import Spacing
from wsfleet.channels.store import (
    ChannelStore,
    ChannelStoreUnavailable,
    History,
    HistoryRequest,
    Position,
    PresenceUpdate,
    PublishRequest,
)

log = structlog.get_logger()

Q = TypeVar("Q")
R = TypeVar("R")
MAX_BATCH = 1000  # items in one call at most (a bigger backlog leaves in several)


class BatchedCalls(Generic[Q, R]):
    """Requests gathered into one store call per batch; each answered by its callback."""

    def __init__(
        self,
        run: Callable[[Sequence[Q]], Awaitable[Sequence[R | ChannelStoreUnavailable]]],
        spacing_s: float,
        on_error: Callable[[], None],
    ) -> None:
        self._run = run
        self._spacing = Spacing(spacing_s)
        self._on_error = on_error
        self._pending: list[tuple[Q, Callable[[R | ChannelStoreUnavailable], None]]] = []
        self._writer: asyncio.Task[None] | None = None

    def submit(self, request: Q, done: Callable[[R | ChannelStoreUnavailable], None]) -> None:
        self._pending.append((request, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write())

    async def call(self, request: Q) -> R:
        """Submit and wait (raises :class:`ChannelStoreUnavailable`)."""
        answer: asyncio.Future[R | ChannelStoreUnavailable] = (
            asyncio.get_running_loop().create_future()
        )

        def done(result: R | ChannelStoreUnavailable) -> None:
            if not answer.done():  # the caller may have given up (cancelled)
                answer.set_result(result)

        self.submit(request, done)
        result = await answer
        if isinstance(result, ChannelStoreUnavailable):
            raise result
        return result

    async def _write(self) -> None:
        while self._pending:
            await self._spacing.pace()  # let this turn's requests join
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                results: Sequence[R | ChannelStoreUnavailable] = await self._run(
                    [request for request, _ in batch]
                )
            except ChannelStoreUnavailable as exc:
                results = [exc] * len(batch)
            if any(isinstance(result, ChannelStoreUnavailable) for result in results):
                self._on_error()
            for (_, done), result in zip(batch, results, strict=True):
                try:
                    done(result)
                except Exception:  # one requester's mistake must not cost the others
                    log.exception("channel_callback_failed")

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()


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

    async def stop(self) -> None:
        await self._calls.stop()


def _ignore(_: object) -> None:
    return None
