"""Live gateway membership, read from the registry and watched for changes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import structlog

from wsfleet.registry import PodState, Registry, RegistryUnavailable

log = structlog.get_logger()


@dataclass(frozen=True, slots=True, order=True)
class Endpoint:
    """A gateway pod as Envoy should see it."""

    pod_id: str
    host: str
    port: int
    draining: bool
    region: str
    zone: str


Membership = Mapping[str, tuple[Endpoint, ...]]  # pool name -> endpoints, sorted


async def read_membership(registry: Registry) -> Membership:
    """Every live pod of every pool, grouped and sorted."""
    pools: dict[str, list[Endpoint]] = {}
    for pod in await registry.list_pods():
        endpoint = Endpoint(
            pod_id=pod.pod_id,
            host=pod.host,
            port=pod.port,
            draining=pod.state is PodState.DRAINING,
            region=pod.region,
            zone=pod.zone,
        )
        pools.setdefault(pod.pool, []).append(endpoint)
    return {pool: tuple(sorted(endpoints)) for pool, endpoints in pools.items()}


class MembershipWatcher:
    """Calls ``on_change`` with the new membership whenever it changes.

    Changes announced on the registry's channel arrive at once; pods that
    expire silently (crashed, partitioned) are noticed by polling every
    ``poll_interval_s``. A registry outage keeps the last membership (Envoy
    keeps routing to the pods it knows) and is retried.
    """

    def __init__(
        self,
        registry: Registry,
        on_change: Callable[[Membership], Awaitable[None]],
        poll_interval_s: float = 1.0,
    ) -> None:
        self._registry = registry
        self._on_change = on_change
        self._poll_interval_s = poll_interval_s
        self._current: Membership | None = None
        self._wake = asyncio.Event()
        self.registry_errors = 0

    @property
    def current(self) -> Membership | None:
        return self._current

    async def refresh(self) -> None:
        """Read the registry now and report a change, if any."""
        try:
            membership = await read_membership(self._registry)
        except RegistryUnavailable as exc:
            self.registry_errors += 1
            log.warning("registry_unavailable", error=str(exc))
            return
        if membership != self._current:
            self._current = membership
            await self._on_change(membership)

    async def run(self) -> None:
        """Refresh on every announcement and every poll interval, until cancelled."""
        listener = asyncio.create_task(self._listen())
        try:
            while True:
                await self.refresh()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._poll_interval_s)
                self._wake.clear()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener

    async def _listen(self) -> None:
        while True:
            try:
                async for _pod_id in self._registry.membership_changes():
                    self._wake.set()
            except RegistryUnavailable as exc:
                log.debug("membership_channel_lost", error=str(exc))
            await asyncio.sleep(self._poll_interval_s)
