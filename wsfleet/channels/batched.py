"""Requests gathered into one store call per batch.

Whatever one turn of the event loop asks for goes out as one call, one round trip, and
batches leave at least the batch spacing apart while busy (:mod:`wsfleet.batch_spacing`).
Nothing is created per item: a requester hands over a callback (one that must wait makes
its own future: a subscribe or an API call, not a message).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import structlog

from wsfleet.batch_spacing import Spacing
from wsfleet.channels.store import ChannelStoreUnavailable

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

    async def flush(self, timeout_s: float) -> None:
        """Wait (at most ``timeout_s``) until what was submitted has been written."""
        if self._writer is not None and not self._writer.done():
            await asyncio.wait({self._writer}, timeout=timeout_s)

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
