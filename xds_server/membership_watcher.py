"""Live gateway membership, read from the registry and watched for changes.

The asyncio half of membership: what a membership is and how it is computed from pod
records is :mod:`xds_server.membership` (pure).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from wsfleet.cancelling import cancel_and_wait
from wsfleet.registry import PodRecord, Registry, RegistryUnavailable
from xds_server.membership import Membership, group_by_pool

log = structlog.get_logger()


class MembershipWatcher:
    """Calls ``on_change`` with the new membership whenever it changes.

    Announced changes (a pod joins, changes state, leaves) are read one pod at
    a time, at once. Silent expiries (a crashed or partitioned pod) are found
    by a cheap presence check every ``poll_interval_s``, and everything is
    re-read every ``full_resync_s`` in case an announcement was lost. A
    registry outage keeps the last membership (Envoy keeps routing to the pods
    it knows) and is retried.
    """

    def __init__(
        self,
        registry: Registry,
        on_change: Callable[[Membership], Awaitable[None]],
        poll_interval_s: float = 1.0,
        full_resync_s: float = 30.0,
    ) -> None:
        self._registry = registry
        self._on_change = on_change
        self._poll_interval_s = poll_interval_s
        self._full_resync_s = full_resync_s
        self._pods: dict[str, PodRecord] = {}
        self._current: Membership | None = None
        self._announced: set[str] = set()
        self._wake = asyncio.Event()
        self.registry_errors = 0

    @property
    def current(self) -> Membership | None:
        return self._current

    async def refresh(self) -> None:
        """Re-read every pod now and report a change, if any."""
        await self._guarded(self._read_all())

    async def _read_all(self) -> None:
        self._pods = {pod.pod_id: pod for pod in await self._registry.list_pods()}

    async def _read_announced(self) -> None:
        pending, self._announced = self._announced, set()
        for pod_id in sorted(pending):
            pod = await self._registry.get_pod(pod_id)
            if pod is None:
                self._pods.pop(pod_id, None)
            else:
                self._pods[pod_id] = pod

    async def _check_presence(self) -> None:
        live = await self._registry.live_pod_ids()
        for pod_id in set(self._pods) - live:
            del self._pods[pod_id]
        for pod_id in sorted(live - set(self._pods)):
            pod = await self._registry.get_pod(pod_id)
            if pod is not None:
                self._pods[pod_id] = pod

    async def _guarded(self, step: Awaitable[None]) -> None:
        try:
            await step
        except RegistryUnavailable as exc:
            self.registry_errors += 1
            log.warning("registry_unavailable", error=str(exc))
            return
        membership = group_by_pool(self._pods.values())
        if membership != self._current:
            self._current = membership
            await self._on_change(membership)

    async def run(self) -> None:
        """Follow the registry until cancelled."""
        listener = asyncio.create_task(self._listen())
        loop = asyncio.get_running_loop()
        next_presence = loop.time() + self._poll_interval_s
        next_full = loop.time() + self._full_resync_s
        try:
            await self.refresh()
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), max(0.0, next_presence - loop.time()))
                self._wake.clear()
                if self._announced:
                    await self._guarded(self._read_announced())
                now = loop.time()
                if now >= next_full:
                    await self.refresh()
                    next_full = now + self._full_resync_s
                    next_presence = now + self._poll_interval_s
                elif now >= next_presence:
                    await self._guarded(self._check_presence())
                    next_presence = now + self._poll_interval_s
        finally:
            await cancel_and_wait(listener)

    async def _listen(self) -> None:
        while True:
            try:
                async for pod_id in self._registry.membership_changes():
                    self._announced.add(pod_id)
                    self._wake.set()
            except RegistryUnavailable as exc:
                log.debug("membership_channel_lost", error=str(exc))
            # reconnected (or lost): announcements may have been missed
            self._wake.set()
            await asyncio.sleep(self._poll_interval_s)
