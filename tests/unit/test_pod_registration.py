"""A pod's registry record is written one write at a time, in order: a state change made
while the refresh loop's write is in flight lands after it, and nothing lands after the
removal (wsfleet/pod_registration.py; a registry whose first write waits to be let go)."""

from __future__ import annotations

import asyncio

from wsfleet.pod_registration import PodRegistration
from wsfleet.registry import PodRecord, PodState
from wsfleet.registry.memory import MemoryRegistry


class HeldRegistry(MemoryRegistry):
    """The first ``put_pod`` waits until ``release`` is set: a write in flight, as on a
    connection of its own, while the next one would go out on another."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.writes: list[PodState] = []
        self._held = False

    async def put_pod(self, pod: PodRecord, ttl_s: float) -> bool:
        if not self._held:
            self._held = True
            await self.release.wait()
        self.writes.append(pod.state)
        return await super().put_pod(pod, ttl_s)


def registration(registry: HeldRegistry) -> PodRegistration:
    pod = PodRecord(pod_id="sidecar-1", pool="gateways", host="127.0.0.1", port=1, admin_port=2)
    return PodRegistration(registry, pod, ttl_s=5.0, refresh_s=1.5, connection_counts=dict)


async def test_a_state_change_during_a_refresh_is_written_after_it() -> None:
    registry = HeldRegistry()
    pod = registration(registry)
    refreshing = asyncio.ensure_future(pod.refresh())  # the loop's write: serving, held
    await asyncio.sleep(0)
    draining = asyncio.ensure_future(pod.set_state(PodState.DRAINING))
    await asyncio.sleep(0)
    assert registry.writes == []  # the change waits for the write in flight
    registry.release.set()
    await asyncio.gather(refreshing, draining)
    assert registry.writes == [PodState.SERVING, PodState.DRAINING]
    record = await registry.get_pod("sidecar-1")
    assert record is not None and record.state is PodState.DRAINING


async def test_nothing_is_written_after_the_removal() -> None:
    registry = HeldRegistry()
    pod = registration(registry)
    refreshing = asyncio.ensure_future(pod.refresh())
    await asyncio.sleep(0)
    removing = asyncio.ensure_future(pod.remove())
    late = asyncio.ensure_future(pod.set_state(PodState.DRAINING))
    await asyncio.sleep(0)
    registry.release.set()
    await asyncio.gather(refreshing, removing)
    assert await late is None
    assert registry.writes == [PodState.SERVING]  # the removal came after it, nothing since
    assert await registry.get_pod("sidecar-1") is None
    assert not pod.registered
    assert await pod.refresh() is False
