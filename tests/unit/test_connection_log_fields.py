"""Every log line the gateway writes about one connection carries its ``connection_id``
and ``session_id`` as fields (docs/observability.md: not bound per connection)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from structlog.testing import capture_logs

from sidecar.channel_hub import ChannelHub
from sidecar.channel_service import ChannelLimits, ChannelService, ChannelSession
from wsfleet.channels.memory_store import MemoryChannelStore


@dataclass
class _Session:
    connection_id: str = "c-1"
    session_id: str = "s-1"
    channels: Any = None


async def test_a_refused_server_subscription_names_the_connection_and_the_session() -> None:
    # no control plane yet: no namespaces, so every server-side subscription is refused
    hub = ChannelHub(None, str, "cmd", None, None, lambda: None, 60.0)  # type: ignore[arg-type]
    service = ChannelService(hub, MemoryChannelStore(), None, ChannelLimits(3, 3))  # type: ignore[arg-type]
    with capture_logs() as logs:
        assert not await service.subscribe_server(cast(ChannelSession, _Session()), "news:x")
    (line,) = [entry for entry in logs if entry["event"] == "server_subscribe_refused"]
    assert line["connection_id"] == "c-1" and line["session_id"] == "s-1"
