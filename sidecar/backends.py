"""All backend links of this pod, whatever they speak; each session goes to one of them.

A backend that goes away: its sessions move to the backend that now owns their key
(``backend_loss="move"``; the new backend gets ``opened`` again) or are closed with 1013
(``"close"``, or when no backend is up). Nothing hangs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

from sidecar.backend_bridge import (
    BackendLink,
    GrpcBackendLink,
    LostSessions,
    OnPublish,
)
from sidecar.backend_ws import WebSocketBackendLink
from sidecar.core.close_codes import CloseCode
from sidecar.hashing import pick_backend
from wsfleet.batch_spacing import BRIDGE_BATCH_SPACING_S

log = structlog.get_logger()


class BackendBridge:
    """All backend links of this pod; routes each session to one of them."""

    def __init__(
        self,
        addresses: Iterable[str],
        pod_id: str,
        on_loss: str = "move",
        on_publish: OnPublish | None = None,
        spacing_s: float = BRIDGE_BATCH_SPACING_S,
    ) -> None:
        if on_loss not in ("move", "close"):
            raise ValueError(f"backend_loss must be 'move' or 'close', not {on_loss!r}")
        self._on_loss = on_loss
        self._links: dict[str, BackendLink] = {}
        for address in addresses:
            if address.startswith(("ws://", "wss://")):
                self._links[address] = WebSocketBackendLink(address)
            else:
                self._links[address] = GrpcBackendLink(
                    address, pod_id, on_publish=on_publish, spacing_s=spacing_s
                )
        self.moved_sessions = 0

    @property
    def links(self) -> list[BackendLink]:
        return list(self._links.values())

    def start(self) -> None:
        for link in self._links.values():
            link.start(self._sessions_lost)

    async def stop(self) -> None:
        for link in self._links.values():
            await link.stop()

    async def wait_any_up(self, timeout_s: float) -> bool:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while asyncio.get_running_loop().time() < deadline:
            if any(link.is_up for link in self._links.values()):
                return True
            await asyncio.sleep(0.05)
        return any(link.is_up for link in self._links.values())

    def link_for(self, routing_key: str) -> BackendLink | None:
        """The up backend that owns ``routing_key``, or None if none is up."""
        up = [address for address, link in self._links.items() if link.is_up]
        chosen = pick_backend(routing_key, up)
        return self._links[chosen] if chosen is not None else None

    def _sessions_lost(self, link: BackendLink, sessions: LostSessions) -> None:
        moved = 0
        for sink in sessions:
            routing_key = sink.session_info().routing_key
            target = self.link_for(routing_key) if self._on_loss == "move" else None
            if target is None or target is link:
                sink.close_requested(CloseCode.TRY_AGAIN_LATER, "backend unavailable")
                continue
            sink.rebind(target)
            target.open(sink, resumed=True, last_message_id=sink.backend_last_id)
            moved += 1
        self.moved_sessions += moved
        log.warning(
            "backend_sessions_lost",
            backend=link.address,
            sessions=len(sessions),
            moved=moved,
            closed=len(sessions) - moved,
        )
