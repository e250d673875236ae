"""The gateway of one sidecar: what its transports share. The rules at the door are the
:class:`~sidecar.admission.Gatekeeper`'s, the open connections the
:class:`~sidecar.connection_table.ConnectionTable`'s; here they meet the settings, the
metrics, the registry writers and the replay store."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from aiohttp import web

from sidecar.admission import Gatekeeper
from sidecar.auth import TokenVerifier
from sidecar.backend_bridge import GrpcBackendLink
from sidecar.backends import BackendBridge
from sidecar.channel_service import ChannelService, ChannelSession
from sidecar.connection_table import ConnectionTable
from sidecar.core import HeartbeatPolicy, InboundLimits
from sidecar.core.poll_closes import PollCloses
from sidecar.core.session import QueueBounds
from sidecar.metrics import GatewayMetrics
from sidecar.replay_store import ReplayStore, ReplayWriter
from sidecar.session_registry import SessionRegistry
from wsfleet.settings import SidecarSettings


@dataclass
class Gateway:
    settings: SidecarSettings
    verifier: TokenVerifier
    bridge: BackendBridge
    metrics: GatewayMetrics
    sessions: SessionRegistry
    replay_store: ReplayStore
    replay: ReplayWriter
    channels: ChannelService
    gatekeeper: Gatekeeper = field(init=False)
    table: ConnectionTable = field(init=False)
    poll_closes: PollCloses = field(init=False)  # closes of poll sessions, for their next poll

    def __post_init__(self) -> None:
        settings = self.settings
        self.gatekeeper = Gatekeeper(settings, self.verifier, self.bridge, self.sessions)
        policy = HeartbeatPolicy(
            settings.heartbeat_interval_s, settings.heartbeat_timeout_s, settings.heartbeat_jitter
        )
        self.table = ConnectionTable(policy, self.metrics, self.sessions, settings.poll_timeout_s)
        self.poll_closes = PollCloses(keep_s=settings.poll_timeout_s)
        self.channels.sessions_of = self._sessions_of_user
        self._wire_metrics()

    def _wire_metrics(self) -> None:
        """Hand the timers of the batched writers and links to this gateway's metrics."""
        metrics, settings = self.metrics, self.settings
        metrics.identify(settings.pod_id, settings.pool, settings.region, settings.zone)
        self.sessions.redis_timer.observe = metrics.observe_redis_batch
        self.replay.redis_timer.observe = metrics.observe_redis_batch
        self.channels.hub.on_delivered = metrics.delivery.observe
        for link in self.bridge.links:
            if isinstance(link, GrpcBackendLink):
                link.round_trips.observe = metrics.bridge_round_trip.observe

    def _sessions_of_user(self, user_id: str) -> Iterable[ChannelSession]:
        # every connection the table holds is a ClientSession (the table is typed by the
        # protocol it needs, so that it does not import the sessions)
        return cast(list[ChannelSession], list(self.table.by_user.get(user_id, ())))

    @property
    def pod_id(self) -> str:
        return self.settings.pod_id

    @functools.cached_property
    def queue_bounds(self) -> QueueBounds:
        """Every session's send-queue bounds (one object for the pod)."""
        settings = self.settings
        return QueueBounds(
            settings.send_queue_messages, settings.send_queue_bytes, settings.slow_consumer_grace_s
        )

    def new_limits(self) -> InboundLimits | None:
        """Per-connection inbound limits, or None when the settings set none."""
        settings = self.settings
        limits = InboundLimits(
            messages_per_s=settings.messages_per_s or None,
            message_burst=settings.message_burst or None,
            bytes_per_s=settings.bytes_per_s or None,
            byte_burst=settings.byte_burst or None,
            on_exceed="close" if settings.rate_limit_action == "close" else "drop",
        )
        return None if limits.unlimited else limits


GATEWAY_KEY = web.AppKey("gateway", Gateway)
