"""Where Envoy hashes this pool's users, as the control plane's policy says.

The policy's ``hash_key`` is the one definition: the control plane writes each pool's
:class:`~wsfleet.registry.HashSources` to the registry, and the gateway reads its pool's
at start and again every ``every_s``, so a policy change reaches every gateway without a
restart. Until it is known, handshakes are refused with 503 ``no_hash_key`` (the control
plane writes it before it serves Envoy, so no client should meet that).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from wsfleet.registry import HashSources, Registry, RegistryUnavailable

log = structlog.get_logger()


class HashSourcesFollower:
    def __init__(
        self,
        registry: Registry,
        pool: str,
        apply: Callable[[HashSources], None],
        every_s: float,
    ) -> None:
        self._registry = registry
        self._pool = pool
        self._apply = apply
        self._every_s = every_s
        self.current: HashSources | None = None

    async def refresh(self) -> None:
        """Read the pool's hash sources; apply them if they changed. A registry that does
        not answer keeps what was known."""
        try:
            sources = await self._registry.get_hash_sources(self._pool)
        except RegistryUnavailable:
            return  # counted by the registration's own writes; try again next round
        if sources is not None and sources != self.current:
            log.info(
                "hash_sources",
                pool=self._pool,
                header=sources.header,
                query_parameter=sources.query_parameter,
                cookie=sources.cookie,
            )
            self.current = sources
            self._apply(sources)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            await self.refresh()
