"""Items queued between writes; one writer takes all of them at once.

Producers :meth:`Outbox.put` without waiting (and look at :attr:`Outbox.full` for
backpressure); the writer awaits :meth:`Outbox.take`, which hands over everything
queued since its last write, up to a count and a byte bound. Whatever queued up
during one turn of the event loop therefore leaves in one write. With ``spacing_s``,
a take that follows the previous one within ``spacing_s`` waits out the rest of it
(unless a whole batch is already waiting), so steady traffic leaves in batches and not
one item per write. Keyed items (:meth:`Outbox.put_latest`) replace each other: a
watermark sent once per write.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Generic, TypeVar

from wsfleet.batch_spacing import Spacing

T = TypeVar("T")


class OutboxClosed(Exception):
    """The outbox was closed and everything queued was taken."""


class Outbox(Generic[T]):
    __slots__ = (
        "_closed",
        "_items",
        "_latest",
        "_ready",
        "_space",
        "_spacing",
        "limit",
        "max_batch_bytes",
        "max_batch_items",
    )

    def __init__(
        self, limit: int, max_batch_items: int, max_batch_bytes: int, spacing_s: float = 0.0
    ) -> None:
        self.limit = limit  # producers should wait for space beyond this many items
        self.max_batch_items = max_batch_items
        self.max_batch_bytes = max_batch_bytes
        self._spacing = Spacing(spacing_s)  # batches leave this far apart, unless full
        self._items: deque[tuple[T, int]] = deque()
        self._latest: dict[str, T] = {}
        self._ready = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self.limit

    def put(self, item: T, size: int = 0) -> None:
        """Queue ``item`` (``size``: its payload bytes, for the batch bound)."""
        self._items.append((item, size))
        self._ready.set()
        if len(self._items) >= self.limit:
            self._space.clear()

    def put_latest(self, key: str, item: T) -> None:
        """Queue ``item`` in place of any not yet taken under the same key."""
        self._latest[key] = item
        self._ready.set()

    async def wait_space(self) -> None:
        await self._space.wait()

    def close(self) -> None:
        """No more items: :meth:`take` returns what is left, then raises OutboxClosed."""
        self._closed = True
        self._ready.set()

    def clear(self) -> None:
        self._items.clear()
        self._latest.clear()
        self._space.set()

    async def take(self) -> list[T]:
        """Everything queued (within the batch bounds); waits while there is nothing."""
        while not self._items and not self._latest:
            if self._closed:
                raise OutboxClosed
            self._ready.clear()
            await self._ready.wait()
        loop = asyncio.get_running_loop()
        wait_s = self._spacing.wait_s(loop.time())
        if wait_s > 0 and len(self._items) < self.max_batch_items:
            await asyncio.sleep(wait_s)  # the last batch left moments ago: let this one fill
        self._spacing.mark(loop.time())
        batch: list[T] = []
        taken_bytes = 0
        items = self._items
        while items and len(batch) < self.max_batch_items:
            item, size = items[0]
            if batch and taken_bytes + size > self.max_batch_bytes:
                break
            items.popleft()
            batch.append(item)
            taken_bytes += size
        if self._latest and len(batch) < self.max_batch_items:
            batch.extend(self._latest.values())
            self._latest = {}
        if len(items) < self.limit:
            self._space.set()
        return batch
