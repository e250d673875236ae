"""In-memory registry for unit tests: same behaviour as Redis, one process."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable

from wsfleet.registry.base import (
    MAX_ENVOYS,
    ConnectionRecord,
    EdgeDrain,
    EnvoyPresence,
    HashSources,
    PodRecord,
    check_lease,
)


class MemoryRegistry:
    """A registry held in a dict; TTLs follow ``clock`` (``time.monotonic`` by default)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._pods: dict[str, tuple[PodRecord, float]] = {}
        self._connections: dict[str, tuple[ConnectionRecord, float]] = {}
        self._listeners: list[asyncio.Queue[str]] = []
        self._hash_sources: dict[str, HashSources] = {}
        self._channel_config: str | None = None
        self._edge_drains: dict[str, EdgeDrain] = {}
        self._envoys: dict[str, tuple[list[EnvoyPresence], float]] = {}  # replica -> (, expiry)
        self._leases: dict[str, tuple[str, float]] = {}  # name -> (holder, expiry)

    async def put_hash_sources(self, pools: dict[str, HashSources]) -> None:
        self._hash_sources.update(pools)

    async def get_hash_sources(self, pool: str) -> HashSources | None:
        return self._hash_sources.get(pool)

    async def put_channel_config(self, text: str) -> None:
        self._channel_config = text

    async def get_channel_config(self) -> str | None:
        return self._channel_config

    async def put_edge_drain(self, drain: EdgeDrain) -> None:
        self._edge_drains[drain.node] = drain

    async def remove_edge_drain(self, node: str) -> bool:
        return self._edge_drains.pop(node, None) is not None

    async def edge_drains(self) -> dict[str, EdgeDrain]:
        return dict(self._edge_drains)

    async def put_envoys(self, replica: str, envoys: list[EnvoyPresence], ttl_s: float) -> None:
        if envoys:
            own = [envoy for envoy in envoys[:MAX_ENVOYS] if envoy.replica == replica]
            self._envoys[replica] = (own, self._clock() + ttl_s)
        else:
            self._envoys.pop(replica, None)

    async def envoys(self) -> list[EnvoyPresence]:
        now = self._clock()
        for replica, (_, expires_at) in list(self._envoys.items()):
            if expires_at <= now:
                del self._envoys[replica]
        listed = [
            envoy
            for replica in sorted(self._envoys)
            for envoy in sorted(self._envoys[replica][0], key=lambda e: e.node)
        ]
        return listed[:MAX_ENVOYS]

    async def put_pod(self, pod: PodRecord, ttl_s: float) -> bool:
        previous = self._live(pod.pod_id)
        self._pods[pod.pod_id] = (pod, self._clock() + ttl_s)
        if previous is None or previous.state != pod.state:
            self._announce(pod.pod_id)
        return previous is not None

    async def remove_pod(self, pod_id: str) -> None:
        if self._pods.pop(pod_id, None) is not None:
            self._announce(pod_id)

    async def list_pods(self, pool: str | None = None) -> list[PodRecord]:
        live = (self._live(pod_id) for pod_id in sorted(self._pods))
        return [pod for pod in live if pod is not None and (pool is None or pod.pool == pool)]

    async def get_pod(self, pod_id: str) -> PodRecord | None:
        return self._live(pod_id)

    async def live_pod_ids(self) -> set[str]:
        return {pod_id for pod_id in list(self._pods) if self._live(pod_id) is not None}

    async def membership_changes(self) -> AsyncIterator[str]:
        queue: asyncio.Queue[str] = asyncio.Queue()
        self._listeners.append(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._listeners.remove(queue)

    async def add_connections(
        self, records: list[ConnectionRecord], ttl_s: float, max_per_user: int
    ) -> set[str]:
        refused = set()
        for record in records:
            held = len(await self.connections_of_user(record.user_id))
            if max_per_user and held >= max_per_user:
                refused.add(record.connection_id)
                continue
            self._connections[record.connection_id] = (record, self._clock() + ttl_s)
        return refused

    async def remove_connections(self, records: list[ConnectionRecord]) -> None:
        for record in records:
            self._connections.pop(record.connection_id, None)

    async def touch_connections(self, records: list[ConnectionRecord], ttl_s: float) -> None:
        for record in records:
            if await self.get_connection(record.connection_id) is not None:
                self._connections[record.connection_id] = (record, self._clock() + ttl_s)

    async def put_connections(self, records: list[ConnectionRecord], ttl_s: float) -> None:
        for record in records:
            self._connections[record.connection_id] = (record, self._clock() + ttl_s)

    async def hold_lease(self, name: str, holder: str, ttl_s: float) -> bool:
        check_lease(name, holder, ttl_s)
        now = self._clock()
        current = self._leases.get(name)
        if current is not None and current[0] != holder and current[1] > now:
            return False
        self._leases[name] = (holder, now + ttl_s)
        return True

    async def get_connection(self, connection_id: str) -> ConnectionRecord | None:
        entry = self._connections.get(connection_id)
        if entry is None or entry[1] <= self._clock():
            self._connections.pop(connection_id, None)
            return None
        return entry[0]

    async def connections_of_user(self, user_id: str) -> list[ConnectionRecord]:
        return [r for r in await self._live_connections() if r.user_id == user_id]

    async def connections_of_pod(self, pod_id: str) -> list[ConnectionRecord]:
        return [r for r in await self._live_connections() if r.shard == pod_id]

    async def _live_connections(self) -> list[ConnectionRecord]:
        live = [
            await self.get_connection(connection_id) for connection_id in list(self._connections)
        ]
        return sorted((r for r in live if r is not None), key=lambda r: r.connection_id)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _live(self, pod_id: str) -> PodRecord | None:
        entry = self._pods.get(pod_id)
        if entry is None:
            return None
        pod, expires_at = entry
        if expires_at <= self._clock():
            del self._pods[pod_id]
            return None
        return dataclasses.replace(pod)

    def _announce(self, pod_id: str) -> None:
        for queue in self._listeners:
            queue.put_nowait(pod_id)
