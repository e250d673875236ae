"""The channel namespaces, as the control plane's policy says: read from the registry at
start and every ``every_s``, so a policy edit reaches every gateway and server API instance
without a restart. Until the control plane has written them, :attr:`current` is None
(channel requests are answered ``unavailable``)."""

from __future__ import annotations

import asyncio

import structlog

from wsfleet.channels.namespaces import ChannelsConfig, Namespaces
from wsfleet.registry import Registry, RegistryUnavailable

log = structlog.get_logger()


class NamespacesFollower:
    def __init__(self, registry: Registry, every_s: float) -> None:
        self._registry = registry
        self._every_s = every_s
        self._text: str | None = None
        self.current: Namespaces | None = None

    async def refresh(self) -> None:
        """Read the namespaces; apply them if they changed. A registry that does not
        answer, or a text this version cannot read, keeps what was known."""
        try:
            text = await self._registry.get_channel_config()
        except RegistryUnavailable:
            return
        if text is None or text == self._text:
            return
        try:
            config = ChannelsConfig.from_json(text)
        except ValueError as exc:
            log.warning("channel_config_unreadable", error=str(exc))
            return
        self._text, self.current = text, Namespaces(config)
        log.info("channel_namespaces", namespaces=[ns.name for ns in config.namespaces])

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            await self.refresh()
