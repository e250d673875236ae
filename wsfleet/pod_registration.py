"""This pod's entry in the registry: registered, refreshed, marked, removed."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Protocol

import structlog

from wsfleet.registry import PodRecord, PodState, Registry, RegistryUnavailable
from wsfleet.settings import advertised_address

log = structlog.get_logger()


class PodSettings(Protocol):
    """What a registered process (a gateway, a server API instance) says of itself."""

    @property
    def pod_id(self) -> str: ...
    @property
    def pool(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def advertise_host(self) -> str | None: ...
    @property
    def region(self) -> str: ...
    @property
    def zone(self) -> str: ...


def pod_record(settings: PodSettings, started_at: float) -> PodRecord:
    """A process's registry record before it listens (ports 0 until it does)."""
    return PodRecord(
        pod_id=settings.pod_id,
        pool=settings.pool,
        host=advertised_address(settings.host, settings.advertise_host),
        port=0,
        admin_port=0,
        region=settings.region,
        zone=settings.zone,
        started_at=started_at,
    )


class PodRegistration:
    """Keeps ``pod`` alive in the registry (refresh before its TTL runs out).

    Its writes never overlap: the refresh loop's and a state change's would go out on two
    of the store's connections, and the older could land last (a drained pod seen serving
    again until the next refresh); a write waits for the one in flight, and none follows
    the removal."""

    def __init__(
        self,
        registry: Registry,
        pod: PodRecord,
        ttl_s: float,
        refresh_s: float,
        connection_counts: Callable[[], dict[str, int]],
        on_error: Callable[[], None] = lambda: None,
        on_record_lost: Callable[[], None] = lambda: None,
    ) -> None:
        self._registry = registry
        self._pod = pod
        self._ttl_s = ttl_s
        self._refresh_s = refresh_s
        self._connection_counts = connection_counts
        self._on_error = on_error
        self._on_record_lost = on_record_lost
        self._failed = False
        self._left = False  # removed on purpose (shutting down): do not come back by refreshing
        self._writing = asyncio.Lock()  # one write of the record at a time, in order
        self.registered = False

    @property
    def pod(self) -> PodRecord:
        return self._pod

    def set_address(self, port: int, admin_port: int) -> None:
        """Record where the pod listens (known only once its sockets are bound)."""
        self._pod = dataclasses.replace(self._pod, port=port, admin_port=admin_port)

    async def refresh(self) -> bool:
        """Write the pod record now; False (and counted) if the registry is down, False
        (not counted) once the pod has left."""
        async with self._writing:
            if self._left:
                return False
            return await self._write()

    async def _write(self) -> bool:
        counts = self._connection_counts()
        self._pod = dataclasses.replace(
            self._pod,
            conns=sum(counts.values()),
            transports=",".join(f"{name}={count}" for name, count in sorted(counts.items())),
            heartbeat_at=time.time(),
        )
        try:
            existed = await self._registry.put_pod(self._pod, self._ttl_s)
        except RegistryUnavailable as exc:
            self._on_error()
            if not self._failed:
                log.warning("registry_write_failed", error=str(exc))
            self._failed = True
            return False
        if self.registered and (self._failed or not existed):
            # an outage, or the store lost our record (restarted empty): whatever else
            # this pod wrote is probably gone too
            log.info("registry_back", record_lost=not existed)
            self._on_record_lost()
        self._failed = False
        self.registered = True
        return True

    async def set_state(self, state: PodState) -> None:
        self._pod = dataclasses.replace(self._pod, state=state)
        await self.refresh()

    async def run(self) -> None:
        while True:
            await self.refresh()  # nothing once the pod has left
            await asyncio.sleep(self._refresh_s)

    async def remove(self) -> None:
        self._left = True
        async with self._writing:  # after the write in flight, if any
            try:
                await self._registry.remove_pod(self._pod.pod_id)
            except RegistryUnavailable as exc:
                log.warning("registry_remove_failed", error=str(exc))
            self.registered = False
