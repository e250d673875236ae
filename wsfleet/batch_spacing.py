"""Batched writers leave their batches a little apart while they are busy.

Every write to Redis or over the backend bridge costs the pod (and, on one machine, the
peer it wakes) far more than the items in it. A writer that writes as soon as it has
anything sends a batch of one or two items per write under a surge of handshakes; one
that waits out :data:`BATCH_SPACING_S` since its last write sends what arrived
meanwhile in one. After a quiet spell nothing waits: the first item leaves at once.
"""

from __future__ import annotations

import asyncio

BATCH_SPACING_S = 0.002
"""How far apart a Redis writer's batches leave, at least. Small beside the 30 ms
keep-alive target; under steady traffic a batch carries what arrived in the last 2 ms."""

BRIDGE_BATCH_SPACING_S = 0.01
"""How far apart the backend bridge's batches leave (both ways: the gateway's and the
backend kit's writer), at least. A gRPC write costs far more than a Redis round trip:
150-280 us of CPU between the writer and grpc's poller thread, measured on this project's
2-core machine, against ~40 us. Under traffic spread thinly over many sessions (500
messages/s over 3,000 connections, one gateway) 2 ms left about one message per write,
and the bridge took most of both processes' CPU: per message the gateway spent 528 us and
the backend 390 us; 10 ms spacing, 283 and 158 us. A message then waits up to 10 ms per
direction while the bridge is busy, none after a quiet spell."""


class Spacing:
    """When a batched writer may write next."""

    __slots__ = ("_last", "interval_s")

    def __init__(self, interval_s: float = BATCH_SPACING_S) -> None:
        self.interval_s = interval_s
        self._last = float("-inf")

    def wait_s(self, now: float) -> float:
        """How long a write at ``now`` should wait (0: it may leave now)."""
        return max(0.0, self._last + self.interval_s - now)

    def mark(self, now: float) -> None:
        """A batch left at ``now``."""
        self._last = now

    async def pace(self) -> None:
        """Wait until the next batch may leave (at least one turn of the event loop, so
        that what this turn queues joins it), and mark it as leaving."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.wait_s(loop.time()))
        self.mark(loop.time())
