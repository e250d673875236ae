"""The per-node ledger: what every connected Envoy asked for, got, ACKed and NACKed.

Plain data, written from the outcomes the protocol state machines report
(:mod:`xds_server.outcomes`) at the times the ADS service's clock gives, and read by the
debug endpoint (``GET /debug/nodes``) and the metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from xds_server import type_urls
from xds_server.outcomes import Acked, Nacked, Outcome, Sent, Subscribed


@dataclass
class TypeStatus:
    """One resource type on one node."""

    subscribed: list[str] | None = None  # None: wildcard
    sent_version: str = ""
    sent_nonce: str = ""
    sent_at: float = 0.0
    acked_version: str = ""
    acked_at: float = 0.0
    nacked_version: str = ""
    nack_message: str = ""
    nacked_at: float = 0.0
    last_ack_latency_s: float = 0.0
    pushes: int = 0
    acks: int = 0
    nacks: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "subscribed": "*" if self.subscribed is None else self.subscribed,
            "sent": {"version": self.sent_version, "nonce": self.sent_nonce, "at": self.sent_at},
            "acked": {"version": self.acked_version, "at": self.acked_at},
            "nacked": (
                {"version": self.nacked_version, "message": self.nack_message, "at": self.nacked_at}
                if self.nacks
                else None
            ),
            "counts": {"pushes": self.pushes, "acks": self.acks, "nacks": self.nacks},
        }


@dataclass
class NodeStatus:
    """One Envoy's ADS stream."""

    node_id: str
    cluster: str
    protocol: str  # "sotw" | "delta"
    envoy_version: str
    connected_at: float  # Unix seconds
    last_seen: float = 0.0
    connected: bool = True
    region: str = ""  # the node's locality, as its bootstrap says
    zone: str = ""
    types: dict[str, TypeStatus] = field(default_factory=dict)

    def of(self, type_url: str) -> TypeStatus:
        return self.types.setdefault(type_url, TypeStatus())

    def apply(self, outcome: Outcome, now: float) -> None:
        """Record what the stream's state machine reported, as of ``now``."""
        status = self.of(outcome.type_url)
        if isinstance(outcome, Subscribed):
            status.subscribed = None if outcome.names is None else list(outcome.names)
        elif isinstance(outcome, Sent):
            status.sent_version, status.sent_nonce, status.sent_at = (
                outcome.version,
                outcome.nonce,
                now,
            )
            status.pushes += 1
        elif isinstance(outcome, Acked):
            status.acked_version, status.acked_at = outcome.version, now
            status.last_ack_latency_s = now - status.sent_at if status.sent_at else 0.0
            status.acks += 1
        elif isinstance(outcome, Nacked):
            status.nacked_version, status.nack_message = outcome.version, outcome.message
            status.nacked_at = now
            status.nacks += 1

    def to_json(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "cluster": self.cluster,
            "protocol": self.protocol,
            "envoy_version": self.envoy_version,
            "region": self.region,
            "zone": self.zone,
            "connected": self.connected,
            "connected_at": self.connected_at,
            "last_seen": self.last_seen,
            "types": {
                type_urls.SHORT_NAMES.get(url, url): status.to_json()
                for url, status in sorted(self.types.items())
            },
        }


MAX_NODES = 10_000  # nodes remembered: every connected one, and the latest disconnected


class Ledger:
    """All nodes seen since start, by node id (a reconnect replaces the entry)."""

    def __init__(self) -> None:
        self._nodes: dict[str, NodeStatus] = {}
        self._watchers: list[Callable[[], None]] = []

    def on_change(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` each time a node connects or disconnects (it must be cheap: it
        runs on the stream's task; the Envoy presence publisher only sets an event)."""
        self._watchers.append(callback)

    def _changed(self) -> None:
        for callback in self._watchers:
            callback()

    def open(
        self,
        node_id: str,
        cluster: str,
        protocol: str,
        envoy_version: str,
        now: float,
        locality: tuple[str, str] = ("", ""),
    ) -> NodeStatus:
        """A node's stream opened; ``locality`` is its (region, zone)."""
        region, zone = locality
        status = NodeStatus(node_id, cluster, protocol, envoy_version, now, now, True, region, zone)
        self._nodes.pop(node_id, None)  # a reconnect moves to the end: newest last
        self._nodes[node_id] = status
        if len(self._nodes) > MAX_NODES:  # forget the longest-gone disconnected nodes
            gone = [n for n, s in self._nodes.items() if not s.connected]
            for node in gone[: len(self._nodes) - MAX_NODES]:
                del self._nodes[node]
        self._changed()
        return status

    def close(self, status: NodeStatus) -> None:
        if self._nodes.get(status.node_id) is status:
            status.connected = False
            self._changed()

    def nodes(self) -> list[NodeStatus]:
        return [self._nodes[node_id] for node_id in sorted(self._nodes)]

    def get(self, node_id: str) -> NodeStatus | None:
        return self._nodes.get(node_id)

    def connected(self) -> list[NodeStatus]:
        return [node for node in self.nodes() if node.connected]

    def to_json(self) -> list[dict[str, Any]]:
        return [node.to_json() for node in self.nodes()]
