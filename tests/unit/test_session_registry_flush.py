"""A flush of pongs is written a slice at a time, the event loop free between slices, and
a connection closed meanwhile is not written."""

from __future__ import annotations

import asyncio

from sidecar.session_registry import FLUSH_SLICE, SessionRegistry
from wsfleet.registry import ConnectionRecord
from wsfleet.registry.memory import MemoryRegistry


class SlicesSeen(MemoryRegistry):
    def __init__(self) -> None:
        super().__init__()
        self.slices: list[list[str]] = []

    async def touch_connections(self, records: list[ConnectionRecord], ttl_s: float) -> None:
        self.slices.append([record.connection_id for record in records])
        await super().touch_connections(records, ttl_s)


async def test_pongs_are_written_a_slice_at_a_time_and_a_closed_connection_is_skipped() -> None:
    registry = SlicesSeen()
    sessions = SessionRegistry(registry, ttl_s=60, flush_s=2, max_per_user=0)
    count = FLUSH_SLICE * 2 + 10
    ids = [f"c{n:04d}" for n in range(count)]
    await asyncio.gather(
        *(sessions.add(ConnectionRecord(i, f"u{i}", "pod", "", "websocket", 1.0)) for i in ids)
    )
    for n, connection_id in enumerate(ids):
        sessions.touch(connection_id, 100.0 + n)
    ticks = 0

    async def count_ticks() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(count_ticks())
    closed = ids[-1]
    original = registry.touch_connections

    async def first_then_close(records: list[ConnectionRecord], ttl_s: float) -> None:
        if not registry.slices:
            sessions.remove(closed)  # closes while the first slice is written
        await original(records, ttl_s)

    registry.touch_connections = first_then_close  # type: ignore[method-assign]
    before = ticks
    await sessions.flush()
    ticker.cancel()
    assert [len(s) for s in registry.slices] == [FLUSH_SLICE, FLUSH_SLICE, 9]
    assert closed not in registry.slices[-1]
    assert ticks - before >= len(registry.slices)  # the loop ran between slices
    stored = await registry.get_connection(ids[FLUSH_SLICE + 1])
    assert stored is not None and stored.last_ping == 100.0 + FLUSH_SLICE + 1
