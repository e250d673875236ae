"""The current snapshot per node group, and the event the ADS streams wait on.

The asyncio half of the snapshots: :mod:`xds_server.snapshot` holds the values (pure),
this module the one place that stores them and wakes the streams.
"""

from __future__ import annotations

import asyncio

from xds_server.snapshot import DEFAULT_GROUP, Snapshot


class SnapshotCache:
    """The current snapshot per node group; streams wait here for changes.

    A node whose group has no snapshot of its own gets the default group's.
    The cache never touches a stream; the protocol code never builds resources.
    """

    def __init__(self) -> None:
        self._snapshots: dict[str, Snapshot] = {}
        self._generation = 0
        self._changed = asyncio.Event()

    @property
    def generation(self) -> int:
        """Grows by one on every :meth:`set`."""
        return self._generation

    def set(self, snapshot: Snapshot, group: str = DEFAULT_GROUP) -> None:
        self._snapshots[group] = snapshot
        self.touch()

    def touch(self) -> None:
        """Wake every stream to look again (what a node sees changed: its drain state)."""
        self._generation += 1
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def drop(self, group: str) -> None:
        """Forget a group's snapshot (its last Envoy left); never the default group's."""
        if group != DEFAULT_GROUP:
            self._snapshots.pop(group, None)

    def get(self, group: str = DEFAULT_GROUP) -> Snapshot | None:
        return self._snapshots.get(group) or self._snapshots.get(DEFAULT_GROUP)

    async def wait_past(self, generation: int) -> int:
        """Return once the generation is past ``generation``; returns the new one."""
        while self._generation <= generation:
            await self._changed.wait()
        return self._generation
